"""Fixtures shared by the HTTP/WebSocket tests: the app on a real hypercorn socket, and plain
HTTP stubs standing in for services in health probes (health only reads status codes)."""

from __future__ import annotations

import dataclasses
import functools
import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from quart import request
from quart_trio import QuartTrio

from unmute_trio.settings import Settings
from unmute_trio.testing.protocol_only import protocol_only_session
from unmute_trio.testing.server import serve_app
from unmute_trio.web.app import create_app
from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES
from unmute_trio.web.state import AppState


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only when every task has been idle for 5 ms of real time, so
    loopback socket traffic completes before timers (pacing, model latency) are skipped.
    Service timeouts must then be long (see ``testing.harness``): a thread hop (DNS) that takes
    over 5 ms lets the clock jump to the next deadline."""
    return trio.testing.MockClock(autojump_threshold=0.005)


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_stub_service(*, delay_s: float = 0.0, status: int = 200) -> QuartTrio:
    """An HTTP service answering build_info and /v1/models, recording request headers."""
    app = QuartTrio("stub")
    app.config["seen_headers"] = []

    async def answer(body: Any) -> tuple[Any, int]:
        app.config["seen_headers"].append(dict(request.headers))
        await trio.sleep(delay_s)
        return body, status

    @app.get("/api/build_info")
    async def build_info() -> tuple[Any, int]:
        return await answer({"git_hash": "stub"})

    @app.get("/v1/models")
    async def models() -> tuple[Any, int]:
        return await answer({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    return app


@pytest.fixture
def all_down_settings() -> Settings:
    port = closed_port()
    return Settings(
        stt_url=f"ws://127.0.0.1:{port}",
        tts_url=f"ws://127.0.0.1:{port}",
        llm_url=f"http://127.0.0.1:{port}",
        voice_cloning_url=f"http://127.0.0.1:{port}",
        health_timeout_s=0.5,
    )


ServeFn = Callable[..., Any]


@pytest.fixture
def served_states() -> list[AppState]:
    """The AppState of every app started by ``serve`` in this test, in order."""
    return []


@pytest.fixture
def serve(nursery: trio.Nursery, served_states: list[AppState]) -> ServeFn:
    """``await serve(settings, **create_app_kwargs)`` → base URL ``http://127.0.0.1:PORT``.

    Sessions use the protocol-only runner unless ``session_runner`` is given: these tests are
    about the HTTP/WebSocket surface, not conversations (see test_session_conversations.py).
    """

    async def _serve(settings: Settings, **kwargs: Any) -> str:
        kwargs.setdefault("session_runner", protocol_only_session)
        app = create_app(settings, **kwargs)
        served_states.append(app.extensions["unmute"])
        port = await nursery.start(
            functools.partial(serve_app, app, websocket_max_message_size=MAX_CLIENT_FRAME_BYTES)
        )
        return f"http://127.0.0.1:{port}"

    return _serve


@pytest.fixture
def serve_stub(nursery: trio.Nursery) -> ServeFn:
    async def _serve(app: QuartTrio) -> str:
        port = await nursery.start(serve_app, app)
        return f"http://127.0.0.1:{port}"

    return _serve


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
