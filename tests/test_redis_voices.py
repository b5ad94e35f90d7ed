"""Cloned voices shared through a real ``redis-server`` (UNMUTE_REDIS_URL): the store itself,
its faults (Redis refused, hung, restarted), and two ``unmute-trio serve`` processes sharing a
voice. ``make test`` installs Debian's redis-server (scripts/test-deps.sh); each test starts its
own on a free port, with no persistence."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
import trio
from prometheus_client import REGISTRY

from tests.session_helpers import greet
from tests.test_drain import free_port, serve_process
from tests.test_voice_upload import small_wav
from unmute_trio.services.redis_voices import KEY_PREFIX, RedisVoiceStore
from unmute_trio.testing.llm_sim import LlmSimulator
from unmute_trio.testing.stt_sim import SttSimulator
from unmute_trio.testing.tts_sim import TtsSimulator
from unmute_trio.testing.voice_client import VoiceClient
from unmute_trio.testing.voice_cloning_sim import VOICE_SHAPE, VoiceCloningSimulator
from unmute_trio.voice_store import VoiceStoreUnavailable


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed (make test installs it: scripts/test-deps.sh)"
        if os.environ.get("UNMUTE_REQUIRE_LOCAL_ENGINES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


class RedisProcess:
    """A redis-server of our own on ``port``: no persistence, stopped and restarted at will."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._process: trio.Process | None = None

    async def start(self) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        command = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self._workdir)]
        self._process = await trio.lowlevel.open_process(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with trio.fail_after(10):
            while not await self._answers_ping():
                assert self._process.returncode is None, "redis-server exited at start"
                await trio.sleep(0.02)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with trio.CancelScope(shield=True):
                await self._process.wait()
        self._process = None

    async def _answers_ping(self) -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            await stream.send_all(b"PING\r\n")
            return (await stream.receive_some(64)).startswith(b"+PONG")


@asynccontextmanager
async def running_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def store_errors(operation: str) -> float:
    value = REGISTRY.get_sample_value("worker_voice_store_errors_total", {"operation": operation})
    return value or 0.0


VOICE = b"\x82\xa4type\xa5Voice" + bytes(range(256)) * 1250  # ~320 KB, as a real voice


async def test_a_voice_round_trips_and_expires_in_redis(tmp_path: Path) -> None:
    async with running_redis(tmp_path) as server:
        store = RedisVoiceStore(server.url, ttl_s=1.0, timeout_s=2.0, max_connections=2)
        try:
            name = await store.add(VOICE)
            assert name.startswith("custom:")
            assert await store.get(name) == VOICE
            assert await store.check() is None
            raw = redis.Redis.from_url(server.url)
            key = KEY_PREFIX + name.removeprefix("custom:")
            assert 0 < raw.pttl(key) <= 1000  # Redis expires it, with the configured TTL
            # Names that are not ours are never looked up.
            assert await store.get("custom:00000000-0000-4000-8000-000000000000") is None
            assert await store.get("custom:../../etc") is None
            assert await store.get("unmute-prod-website/p329_022.wav") is None
            await trio.sleep(1.2)
            assert await store.get(name) is None
            raw.close()
        finally:
            await store.aclose()


async def test_a_refused_redis_is_reported_quickly_and_counted() -> None:
    port = free_port()  # nothing listens there
    store = RedisVoiceStore(
        f"redis://:secret@127.0.0.1:{port}/0", ttl_s=60, timeout_s=2.0, max_connections=2
    )
    before = store_errors("add")
    with trio.fail_after(5):
        with pytest.raises(VoiceStoreUnavailable) as refused:
            await store.add(VOICE)
        problem = await store.check()
    assert f"Redis at redis://:***@127.0.0.1:{port}/0" in str(refused.value)
    assert "secret" not in str(refused.value)
    assert problem is not None and "secret" not in problem
    assert store_errors("add") == before + 1
    await store.aclose()


async def test_a_redis_that_never_answers_times_out(nursery: trio.Nursery) -> None:
    held: list[trio.SocketStream] = []

    async def accept_and_say_nothing(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    serve = functools.partial(trio.serve_tcp, accept_and_say_nothing, 0, host="127.0.0.1")
    [listener] = await nursery.start(serve)
    port = listener.socket.getsockname()[1]
    store = RedisVoiceStore(f"redis://127.0.0.1:{port}", ttl_s=60, timeout_s=0.5, max_connections=1)
    with trio.fail_after(3):
        with pytest.raises(VoiceStoreUnavailable, match=r"did not answer within 0\.5 s"):
            await store.get("custom:00000000-0000-4000-8000-000000000000")
        # The only connection slot is still held by the abandoned call: the next one waits for
        # it within its own limit instead of opening more connections.
        with pytest.raises(VoiceStoreUnavailable):
            await store.add(VOICE)
    assert held  # it did connect: the limit is on the answer
    await store.aclose()


async def test_the_store_recovers_when_redis_restarts(tmp_path: Path) -> None:
    async with running_redis(tmp_path) as server:
        store = RedisVoiceStore(server.url, ttl_s=60, timeout_s=1.0, max_connections=2)
        try:
            name = await store.add(VOICE)
            await server.stop()
            with trio.fail_after(5):
                with pytest.raises(VoiceStoreUnavailable):
                    await store.get(name)
                assert await store.check() is not None
            await server.start()
            # The pooled connection died with the old server; the next call reconnects.
            assert await store.check() is None
            again = await store.add(VOICE)
            assert await store.get(again) == VOICE
            assert await store.get(name) is None  # no persistence configured: that one is gone
        finally:
            await store.aclose()


def ws(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime"


def warnings_of(client: VoiceClient) -> list[str]:
    return [
        e["error"]["message"] for e in client.of_type("error") if e["error"]["type"] == "warning"
    ]


async def test_two_servers_share_a_cloned_voice_through_redis(tmp_path: Path) -> None:
    stt, tts, llm, cloning = SttSimulator(), TtsSimulator(), LlmSimulator(), VoiceCloningSimulator()
    async with trio.open_nursery() as nursery, running_redis(tmp_path) as server:
        ports = [await nursery.start(s.serve) for s in (stt, tts, llm, cloning)]
        env = {
            **os.environ,
            "KYUTAI_STT_URL": f"ws://127.0.0.1:{ports[0]}",
            "KYUTAI_TTS_URL": f"ws://127.0.0.1:{ports[1]}",
            "KYUTAI_LLM_URL": f"http://127.0.0.1:{ports[2]}",
            "KYUTAI_VOICE_CLONING_URL": f"http://127.0.0.1:{ports[3]}",
            "UNMUTE_REDIS_URL": server.url,
            "UNMUTE_REDIS_TIMEOUT_S": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        async with serve_process("b", env, tmp_path) as (b, _):
            async with serve_process("a", env, tmp_path) as (a, a_process):
                async with httpx.AsyncClient(timeout=10) as http:
                    upload = await http.post(
                        a + "/v1/voices", files={"file": ("me.wav", small_wav(), "audio/wav")}
                    )
                assert upload.status_code == 200, upload.text
                name = upload.json()["name"]

                # A session on the other server speaks with the voice cloned through the first.
                async with VoiceClient.connect(ws(b)) as client:
                    with trio.fail_after(30):
                        await greet(client, voice=name)
                [record] = [c for c in tts.connections_log if c.words_spoken]
                assert record.voice is None and record.voice_message
                assert record.voice_shape == list(VOICE_SHAPE)
                assert warnings_of(client) == []

                a_process.send_signal(signal.SIGTERM)
                with trio.fail_after(20):
                    assert await a_process.wait() == 0

            # The first server is gone; the voice is not.
            tts.connections_log.clear()
            async with VoiceClient.connect(ws(b)) as client:
                with trio.fail_after(30):
                    await greet(client, voice=name)
            [record] = [c for c in tts.connections_log if c.words_spoken]
            assert record.voice_message and warnings_of(client) == []

            # Redis stops: uploads answer 503 at once, health says so, sessions go on.
            await server.stop()
            async with httpx.AsyncClient(timeout=10) as http:
                with trio.fail_after(5):
                    refused = await http.post(
                        b + "/v1/voices", files={"file": ("me.wav", small_wav(), "audio/wav")}
                    )
                    health = (await http.get(b + "/v1/health")).json()
            assert refused.status_code == 503
            assert "voice store is unavailable" in refused.json()["detail"]
            assert health["voice_store"] == "redis" and health["voice_store_up"] is False
            assert health["ok"] is True  # built-in voices still work
            assert "voice_store" in health["problems"]

            tts.connections_log.clear()
            async with VoiceClient.connect(ws(b)) as builtin:
                with trio.fail_after(30):
                    await greet(builtin, voice="unmute-prod-website/p329_022.wav")
            assert warnings_of(builtin) == []
            async with VoiceClient.connect(ws(b)) as custom:
                with trio.fail_after(30):
                    await greet(custom, voice=name)
            [warning] = warnings_of(custom)
            assert "voice store is unavailable" in warning and name in warning
            spoken = [c for c in tts.connections_log if c.words_spoken]
            assert [c.voice_message for c in spoken] == [False, False]  # the default voice

            # Redis is back: the same server uses the store again by itself.
            await server.start()
            async with httpx.AsyncClient(timeout=10) as http:
                with trio.fail_after(5):
                    upload = await http.post(
                        b + "/v1/voices", files={"file": ("me.wav", small_wav(), "audio/wav")}
                    )
                    health = (await http.get(b + "/v1/health")).json()
            assert upload.status_code == 200, upload.text
            assert health["voice_store_up"] is True
        nursery.cancel_scope.cancel()
