"""Logging of the server processes: the same set-up under ``unmute-trio serve`` and under
``hypercorn … unmute_trio.asgi:app``, libraries kept quiet at DEBUG, one line per session opened
and ended, and hypercorn's lines (start-up, access log) printed once each."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import closed_port
from unmute_trio.settings import Settings
from unmute_trio.testing.server import serve_app
from unmute_trio.web import app as web_app
from unmute_trio.web.app import QUIET_LOGGERS, configure_logging, log_each_request_once

# A machine without the services: the server starts, every service is down.
DOWN = f"127.0.0.1:{closed_port()}"
DOWN_ENV = {
    "KYUTAI_STT_URL": f"ws://{DOWN}",
    "KYUTAI_TTS_URL": f"ws://{DOWN}",
    "KYUTAI_LLM_URL": f"http://{DOWN}",
    "KYUTAI_VOICE_CLONING_URL": f"http://{DOWN}",
}


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KYUTAI_", "UNMUTE_"))}
    return {**env, **DOWN_ENV, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root logger and the library loggers as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    quieted = set(web_app._quieted)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
        web_app._quieted.clear()
        web_app._quieted.update(quieted)


# ------------------------------------------------------------------ the set-up


def test_the_asgi_entry_point_configures_logging_like_serve() -> None:
    """Under hypercorn's own command the app module is all that runs of ours: UNMUTE_LOG_LEVEL
    must reach the log from there (it was ignored: bare WARNING text only)."""
    code = (
        "import logging, unmute_trio.asgi\n"
        "quiet = logging.getLogger('trio-websocket').getEffectiveLevel()\n"
        "print(logging.getLogger().level, quiet)\n"
        "logging.getLogger('unmute_trio.check').debug('debug line')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(UNMUTE_LOG_LEVEL="DEBUG"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(logging.DEBUG), str(logging.WARNING)]
    assert re.search(r"^\S+ \S+ DEBUG   unmute_trio\.check: debug line$", result.stderr, re.M)


def test_libraries_stay_quiet_at_debug_unless_their_level_is_set(restore_logging: None) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    web_app._quieted.clear()
    logging.getLogger("wsproto").setLevel(logging.DEBUG)  # asked for explicitly, before
    configure_logging("DEBUG")
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("unmute_trio.session").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("trio-websocket").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("wsproto").getEffectiveLevel() == logging.DEBUG
    configure_logging("ERROR")  # never more verbose than the level asked for
    assert logging.getLogger("trio-websocket").getEffectiveLevel() == logging.ERROR


# ------------------------------------------------------------------ sessions


async def test_a_session_is_logged_when_it_opens_and_when_it_ends(
    serve, all_down_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="unmute_trio.web.realtime")
    base = await serve(all_down_settings)
    url = base.replace("http://", "ws://") + "/v1/realtime"
    with trio.fail_after(5):
        async with open_websocket_url(url, subprotocols=["realtime"]):
            while not any("opened" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
        while not any("ended" in r.getMessage() for r in caplog.records):
            await trio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "unmute_trio.web.realtime"]
    sessions = [line for line in lines if line.startswith("session ")]
    assert re.fullmatch(
        r"session 1 opened \(unmute protocol, client 127\.0\.0\.1, 1 open\)", sessions[0]
    ), sessions
    assert re.fullmatch(r"session 1 ended after \d+\.\d s", sessions[1]), sessions
    assert len(sessions) == 2


# ------------------------------------------------------------------ hypercorn's lines


async def get_and_close(port: int, path: str) -> bytes:
    """GET ``path`` over HTTP/1.1 and close as soon as the whole body is in, as curl does."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    received = b""
    while True:
        head, separator, body = received.partition(b"\r\n\r\n")
        if separator:
            length = re.search(rb"(?i)^content-length: *(\d+)", head, re.M)
            assert length is not None, head
            if len(body) >= int(length.group(1)):
                break
        data = await stream.receive_some()
        assert data, received
        received += data
    await stream.aclose()
    return body


async def test_a_request_whose_client_left_early_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client has the whole response and closes before the app's last (empty) body message:
    hypercorn logged the request twice, with "-" and then with 200."""
    log_each_request_once()
    access = logging.getLogger("tests.access")
    caplog.set_level(logging.INFO, logger="tests.access")
    finished = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        finished.set()

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_app, app, accesslog=access))
        with trio.fail_after(5):
            assert await get_and_close(port, "/early") == b"hello"
            await finished.wait()
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.access"]
    assert len(lines) == 1, lines
    assert '"GET /early 1.1" 200' in lines[0]


async def test_serve_prints_hypercorn_lines_once() -> None:
    """Under ``unmute-trio serve``: the start-up line, each request of a client that leaves as
    soon as it has its answer, and a session, each once."""
    port = closed_port()
    argv = [sys.executable, "-m", "unmute_trio", "serve"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=python_env()
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = b"", b""

    async def read_stdout() -> None:
        nonlocal stdout
        assert process.stdout is not None
        while data := await process.stdout.receive_some():
            stdout += data

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stdout)
            with trio.fail_after(30):  # interpreter start and imports, on a loaded machine
                while b"Running on" not in stderr:
                    data = await process.stderr.receive_some()
                    assert data, f"serve exited early: {stderr!r}"
                    stderr += data
                for _ in range(10):
                    await get_and_close(port, "/")
                url = f"ws://127.0.0.1:{port}/v1/realtime"
                async with open_websocket_url(url, subprotocols=["realtime"]) as ws:
                    await ws.get_message()  # the STT is down: an error, then the close
                while stdout.count(b"\n") < 11 or b"ended" not in stderr:
                    with trio.move_on_after(0.1):
                        stderr += await process.stderr.receive_some()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                while data := await process.stderr.receive_some():
                    stderr += data
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err, out = stderr.decode(), stdout.decode().splitlines()
    assert err.count("Running on") == 1, err
    assert len(re.findall(r"session 1 opened \(unmute protocol", err)) == 1, err
    assert len(re.findall(r"session 1 ended after", err)) == 1, err
    assert [line for line in out if '"GET / 1.1"' in line and '" 200 ' in line] == out[:10], out
    assert len(out) == 11 and '"GET /v1/realtime 1.1" 101' in out[10], out
