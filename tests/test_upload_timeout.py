"""A stalled ``POST /v1/voices`` body is answered 408 and its connection closed (issue 15,
item 5).

A client that announces a ``Content-Length`` beyond what it sends, then goes silent, used to
hold its connection until Quart's 60 s body timeout. The whole body must now arrive within
``UNMUTE_UPLOAD_BODY_TIMEOUT_S`` (default 10 s). Checked with a raw TCP socket against the app
on hypercorn in-process, under ``unmute-trio serve`` and under the documented
``hypercorn --config hypercorn.toml unmute_trio.asgi:app``; other clients are served meanwhile.
The connection really closes (web/hypercorn_fixes.py), also after a 413 and, after a complete
request, once the keep-alive timer runs out.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from tests.conftest import closed_port, replace
from unmute_trio.settings import Settings, SettingsError
from unmute_trio.testing.protocol_only import protocol_only_session
from unmute_trio.testing.server import serve_app
from unmute_trio.web.app import create_app

REPO = Path(__file__).resolve().parent.parent
BOUNDARY = "unmute-test-boundary"
LIMIT_S = 1.0


def test_default_and_value() -> None:
    assert Settings.from_env({}).upload_body_timeout_s == 10.0
    assert Settings.from_env({"UNMUTE_UPLOAD_BODY_TIMEOUT_S": "2.5"}).upload_body_timeout_s == 2.5


@pytest.mark.parametrize(("value", "reason"), [("0", "positive"), ("never", "not a number")])
def test_invalid_values_name_the_variable(value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"UNMUTE_UPLOAD_BODY_TIMEOUT_S": value})
    assert e.value.variable == "UNMUTE_UPLOAD_BODY_TIMEOUT_S"
    assert reason in e.value.reason


def multipart_start() -> bytes:
    """The beginning of a multipart body with a ``file`` field: what a client sends first."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="me.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + b"RIFF" + bytes(200)


async def stalled_upload(
    port: int, *, missing: int = 1000, drip_every_s: float | None = None
) -> tuple[bytes, float]:
    """Send the headers and part of the body, then nothing (or one byte now and then); return
    everything the server sent until it closed the connection, and when it closed it."""
    sent = multipart_start()
    headers = (
        "POST /v1/voices HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(sent) + missing}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    started = trio.current_time()
    answer = b""
    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(headers + sent)
        if drip_every_s is not None:

            async def drip() -> None:
                for _ in range(missing - 1):
                    await trio.sleep(drip_every_s)
                    await stream.send_all(b"x")

            nursery.start_soon(drip)
        while chunk := await stream.receive_some():
            answer += chunk
        nursery.cancel_scope.cancel()
    return answer, trio.current_time() - started


def assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 408"), answer
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    assert headers["connection"] == "close"
    detail = json.loads(body)["detail"]
    assert detail == f"The request body did not arrive within {LIMIT_S:g} s"


async def assert_others_served_meanwhile(base_url: str, port: int) -> None:
    """While one upload stalls, other clients get their answers at once."""
    async with trio.open_nursery() as nursery:
        results: list[tuple[bytes, float]] = []

        async def stall() -> None:
            results.append(await stalled_upload(port))

        nursery.start_soon(stall)
        await trio.sleep(0.2)  # the stalled request is in
        async with httpx.AsyncClient(base_url=base_url, timeout=LIMIT_S / 2) as http:
            for _ in range(3):
                assert (await http.get("/v1/voices")).status_code == 200
        assert not results, "the stalled upload was answered before its limit"
    [(answer, elapsed)] = results
    assert_408(answer)
    assert LIMIT_S <= elapsed < LIMIT_S + 1.5


# ---------------------------------------------------------------------- in-process


async def test_a_stalled_upload_gets_408_and_its_connection_is_closed(
    serve, all_down_settings
) -> None:
    base = await serve(replace(all_down_settings, upload_body_timeout_s=LIMIT_S))
    port = urlsplit(base).port
    assert port is not None
    with trio.fail_after(10):
        answer, elapsed = await stalled_upload(port)
    assert_408(answer)  # and the read above ended: the server closed the connection
    assert LIMIT_S <= elapsed < LIMIT_S + 1.0
    with trio.fail_after(10):
        await assert_others_served_meanwhile(base, port)


async def test_a_dripping_upload_is_bounded_too(serve, all_down_settings) -> None:
    """The limit is for the whole body, not for each pause: one byte every 0.2 s is cut."""
    base = await serve(replace(all_down_settings, upload_body_timeout_s=LIMIT_S))
    port = urlsplit(base).port
    assert port is not None
    with trio.fail_after(10):
        answer, elapsed = await stalled_upload(port, drip_every_s=0.2)
    assert_408(answer)
    assert LIMIT_S <= elapsed < LIMIT_S + 1.0


async def test_an_upload_announced_too_large_is_closed_too(serve, all_down_settings) -> None:
    """413 is answered before the body; the connection must not wait for the rest of it (the
    same hypercorn fix as the 408: web/hypercorn_fixes.py)."""
    base = await serve(replace(all_down_settings, max_upload_bytes=1000))
    port = urlsplit(base).port
    assert port is not None
    with trio.fail_after(10):
        answer, elapsed = await stalled_upload(port, missing=5000)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert elapsed < 1.0


async def test_an_upload_in_time_is_not_affected(serve, all_down_settings) -> None:
    """A whole body in time reaches the cloning step (here unreachable: 503, not 408)."""
    base = await serve(replace(all_down_settings, upload_body_timeout_s=LIMIT_S))
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.post("/v1/voices", files={"file": ("me.wav", b"RIFF" + bytes(5000))})
    assert r.status_code == 503, r.text


async def test_an_idle_keep_alive_connection_is_closed(nursery, all_down_settings) -> None:
    """The same hypercorn fix: after a response, hypercorn restarts the connection's keep-alive
    timer from the app's task, which Quart-Trio cancelled, so it never closed an idle one."""
    app = create_app(all_down_settings, session_runner=protocol_only_session)
    port = await nursery.start(functools.partial(serve_app, app, keep_alive_timeout=LIMIT_S))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /v1/voices HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = trio.current_time()
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert LIMIT_S <= trio.current_time() - started < LIMIT_S + 1.0


# ---------------------------------------------------------------------- the two commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def server_process(command: list[str], port: int, tmp_path: Path) -> AsyncIterator[str]:
    down = f"127.0.0.1:{closed_port()}"
    env = {
        **os.environ,
        "KYUTAI_STT_URL": f"ws://{down}",
        "KYUTAI_TTS_URL": f"ws://{down}",
        "KYUTAI_LLM_URL": f"http://{down}",
        "KYUTAI_LLM_MODEL": "none",
        "UNMUTE_UPLOAD_BODY_TIMEOUT_S": str(LIMIT_S),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command,
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        with trio.fail_after(30):
            async with httpx.AsyncClient(timeout=1) as http:
                while True:
                    assert process.returncode is None, log_path.read_text()
                    try:
                        if (await http.get(base_url + "/")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield base_url
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


async def test_under_unmute_trio_serve(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "unmute_trio", "serve", "--host", "127.0.0.1"]
    async with server_process([*command, "--port", str(port)], port, tmp_path) as base:
        with trio.fail_after(10):
            await assert_others_served_meanwhile(base, port)


async def test_under_the_hypercorn_command(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        "hypercorn.toml",
        "--bind",
        f"127.0.0.1:{port}",
        "unmute_trio.asgi:app",
    ]
    async with server_process(command, port, tmp_path) as base:
        with trio.fail_after(10):
            await assert_others_served_meanwhile(base, port)
