"""Graceful drain: open sessions finish their reply and get close 1001, new ones are refused.

The drain is started three ways: programmatically (``state.drain.begin``), by hypercorn's own
shutdown (the path of ``hypercorn --config hypercorn.toml``, whose workers cannot see the
signal), and by SIGTERM to a real ``python -m unmute_trio serve`` process.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from hypercorn.trio import serve
from trio_websocket import ConnectionClosed

from tests.session_helpers import SMALLTALK, wait_service_connections_closed
from unmute_trio.settings import Settings
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimulator
from unmute_trio.testing.server import hypercorn_config
from unmute_trio.testing.speech import silence
from unmute_trio.testing.stt_sim import SttSimulator
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator
from unmute_trio.testing.voice_client import VoiceClient
from unmute_trio.web.app import create_app

REPO = Path(__file__).resolve().parent.parent


async def stream_silence_until_closed(client: VoiceClient) -> None:
    try:
        while not client.closed:
            await client.stream(silence(0.4))
    except ConnectionClosed:
        pass


@asynccontextmanager
async def idle_session(url: str) -> AsyncIterator[VoiceClient]:
    """A configured session in which nobody speaks (so no bot reply runs)."""
    async with VoiceClient.connect(url) as client:
        await client.update_session(SMALLTALK)
        await client.wait_for("session.updated")
        yield client


async def assert_refused_while_draining(url: str) -> None:
    async with VoiceClient.connect(url) as late:
        assert await late.wait_closed() == 1013
        assert late.close_reason == "server shutting down"
        [event] = late.events
        assert event["type"] == "error" and event["error"]["type"] == "fatal"
        assert event["error"]["code"] == "server_shutting_down"


async def test_the_reply_being_spoken_finishes_then_the_session_closes_1001(
    virtual_clock,
) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_silence_until_closed, client)
                    await client.wait_for("response.audio.delta")  # the greeting is playing
                    drain_began = len(client.events)
                    stack.state.drain.begin("test")
                    await assert_refused_while_draining(stack.realtime_url)
                    assert await client.wait_closed() == 1001
            assert client.close_reason == "server shutting down"
            types = client.types()
            # The greeting played to its end, no new reply started, then the goodbye.
            assert "response.audio.done" in types[drain_began:]
            assert "response.created" not in types[drain_began:]
            assert types[-1] == "error"
            goodbye = client.events[-1]["error"]
            assert goodbye["type"] == "fatal" and goodbye["code"] == "server_shutting_down"
            assert types.index("response.audio.done") < len(types) - 1
        with trio.fail_after(5):
            assert await stack.state.drain.wait_sessions_closed()
        await wait_service_connections_closed(stack)


async def test_the_drain_deadline_cuts_a_long_reply(virtual_clock) -> None:
    # Slow speech: the reply lasts many seconds, far beyond the 0.5 s drain deadline.
    tts = TtsSimConfig(seconds_per_word=0.8)
    async with conversation_stack(tts=tts, drain_timeout_s=0.5) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_silence_until_closed, client)
                    await client.wait_for("response.audio.delta")
                    began_at = trio.current_time()
                    stack.state.drain.begin("test")
                    assert await client.wait_closed() == 1001
                    closed_at = trio.current_time()
            assert "response.audio.done" not in client.types()
            assert client.events[-1]["error"]["code"] == "server_shutting_down"
            assert closed_at - began_at >= 0.5  # it did wait for the deadline (virtual time)
        await wait_service_connections_closed(stack)


async def test_idle_sessions_close_at_once_and_http_is_refused_but_metrics() -> None:
    async with conversation_stack() as stack:
        with trio.fail_after(5):
            async with idle_session(stack.realtime_url) as client:
                stack.state.drain.begin("test")
                assert await client.wait_closed() == 1001
                assert client.events[-1]["error"]["code"] == "server_shutting_down"
            await assert_refused_while_draining(stack.realtime_url)
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=2) as http:
                refused = await http.get("/v1/voices")
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "5"
                assert (await http.get("/metrics")).status_code == 200
            assert await stack.state.drain.wait_sessions_closed()


async def test_hypercorn_shutdown_starts_the_drain() -> None:
    """The ``hypercorn`` CLI's workers shut down through hypercorn's shutdown trigger, never
    through our signal handlers. Without the drain the client would see 1006 after
    graceful_timeout (hypercorn sends no close frame); with it, 1001 at once."""
    stt, tts, llm = SttSimulator(), TtsSimulator(), LlmSimulator()
    stop_server = trio.Event()
    async with trio.open_nursery() as nursery:
        ports = [await nursery.start(sim.serve) for sim in (stt, tts, llm)]
        settings = Settings(
            stt_url=f"ws://127.0.0.1:{ports[0]}",
            tts_url=f"ws://127.0.0.1:{ports[1]}",
            llm_url=f"http://127.0.0.1:{ports[2]}",
        )
        app = create_app(settings)
        # A long graceful timeout: without our drain, hypercorn would cancel the session only
        # after it, and the client would see 1006 (which the == 1001 check catches).
        config = hypercorn_config(graceful_timeout=30)
        binds = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop_server.wait)
        )
        url = binds[0].replace("http://", "ws://") + "/v1/realtime"
        with trio.fail_after(20):  # a hang guard, well under the graceful timeout
            async with idle_session(url) as client:
                stop_server.set()
                assert await client.wait_closed() == 1001
        assert app.extensions["unmute"].drain.reason == "hypercorn is shutting down"
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until_serving(base_url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        while True:
            assert process.returncode is None, "the server exited at start"
            try:
                if (await http.get(base_url + "/")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


@asynccontextmanager
async def serve_process(
    name: str, env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[str, trio.Process]]:
    """``unmute-trio serve`` in a process of its own; yields its base URL and the process."""
    port = free_port()
    log_path = tmp_path / f"{name}.log"
    command = [sys.executable, "-m", "unmute_trio", "serve", "--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [*command, "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with trio.fail_after(20):
            await wait_until_serving(base, process)
        yield base, process
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


async def test_sigterm_to_serve_closes_sessions_1001_and_exits_0(tmp_path: Path) -> None:
    stt, tts, llm = SttSimulator(), TtsSimulator(), LlmSimulator()
    async with trio.open_nursery() as nursery:
        stt_port, tts_port, llm_port = [await nursery.start(s.serve) for s in (stt, tts, llm)]
        env = {
            **os.environ,
            "KYUTAI_STT_URL": f"ws://127.0.0.1:{stt_port}",
            "KYUTAI_TTS_URL": f"ws://127.0.0.1:{tts_port}",
            "KYUTAI_LLM_URL": f"http://127.0.0.1:{llm_port}",
            "UNMUTE_DRAIN_TIMEOUT_S": "5",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        async with serve_process("serve", env, tmp_path) as (base, process):
            with trio.fail_after(15):
                async with idle_session(
                    base.replace("http://", "ws://") + "/v1/realtime"
                ) as client:
                    process.send_signal(signal.SIGTERM)
                    assert await client.wait_closed() == 1001
                    assert client.close_reason == "server shutting down"
                assert await process.wait() == 0, (tmp_path / "serve.log").read_text()
        assert "draining (received SIGTERM)" in (tmp_path / "serve.log").read_text()
        nursery.cancel_scope.cancel()
