"""Hostile clients on /v1/realtime, through real WebSockets against a real server.

Frames that used to end the session as an internal error (``fatal`` + 1011) or be accepted
without bound must be answered with an ``invalid_request_error`` while the session goes on, and
a healthy session opened alongside must not notice. Pages from foreign origins are refused
before the upgrade.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from tests.conftest import replace
from unmute_trio.protocol.browser import (
    MAX_EVENT_ID_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_VOICE_CHARS,
)
from unmute_trio.protocol.json_limits import MAX_JSON_DEPTH
from unmute_trio.settings import Settings
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.web.cors import is_same_origin

SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "instructions": {"type": "smalltalk", "language": None},
        "voice": "unmute-prod-website/p329_022.wav",
        "allow_recording": False,
    },
}


def session_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"allow_recording": False, **session}}


def constant(text: str) -> dict[str, Any]:
    return {"type": "constant", "text": text, "language": "en"}


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime"


async def receive_json(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        event: dict[str, Any] = json.loads(await ws.get_message())
    return event


async def next_error(ws: WebSocketConnection) -> dict[str, Any]:
    """The next ``error`` event (a real session may send status events in between)."""
    while True:
        event = await receive_json(ws)
        if event["type"] == "error":
            return event


async def still_answers(ws: WebSocketConnection) -> None:
    await ws.send_message(json.dumps(SESSION_UPDATE))
    while (await receive_json(ws))["type"] != "session.updated":
        pass


HOSTILE_FRAMES = {
    # 1. Nesting: the parser's RecursionError used to escape as an internal error.
    "deep arrays": ("[" * 100_000 + "]" * 100_000, "nests deeper than", []),
    "deep object": ('{"a":' * 2_000 + "1" + "}" * 2_000, "nests deeper than", []),
    "nested past the limit": (
        json.dumps(session_update(extra=json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH))),
        "nests deeper than",
        [],
    ),
    # Python refuses to convert an integer of more than 4300 digits: a plain ValueError.
    "huge integer": (
        json.dumps(session_update())[:-1] + ', "n": 1' + "0" * 5_000 + "}",
        "more than 4300 digits",
        [],
    ),
    # 2. A lone surrogate used to be accepted, then break the session.updated echo.
    "surrogate voice": (
        '{"type": "session.update", "session": {"voice": "\\ud800", "allow_recording": false}}',
        "(at 'session.voice'): the string contains a lone UTF-16 surrogate",
        ["session", "voice"],
    ),
    "surrogate instructions": (
        '{"type": "session.update", "session": {"allow_recording": false, "instructions":'
        ' {"type": "constant", "text": "Be a pirate \\udc00"}}}',
        "(at 'session.instructions.text')",
        ["session", "instructions", "text"],
    ),
    "surrogate key": ('{"type": "session.update", "\\ud83d": 1}', "lone UTF-16 surrogate", []),
    # 3. Client strings have limits, and the error names the field.
    "1 MB instructions": (
        json.dumps(session_update(instructions=constant("x" * 1_000_000))),
        f"'session.instructions.text' is 1000000 characters long; the limit is"
        f" {MAX_INSTRUCTIONS_CHARS}",
        ["session", "instructions", "text"],
    ),
    "long voice": (
        json.dumps(session_update(voice="v" * (MAX_VOICE_CHARS + 1))),
        f"'session.voice' is {MAX_VOICE_CHARS + 1} characters long",
        ["session", "voice"],
    ),
    "long event_id": (
        json.dumps({**session_update(), "event_id": "e" * (MAX_EVENT_ID_CHARS + 1)}),
        "'event_id' is",
        ["event_id"],
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE_FRAMES))
async def test_hostile_frame_is_an_invalid_request_and_the_sessions_go_on(name: str) -> None:
    frame, expected_message, expected_loc = HOSTILE_FRAMES[name]
    assert len(frame.encode("utf-8", "surrogatepass")) < 1024 * 1024  # below the frame limit
    # The real conversation engine (not the protocol-only session): the STT connects, etc.
    async with conversation_stack() as stack:
        url = stack.realtime_url
        async with (
            open_websocket_url(url, subprotocols=["realtime"]) as healthy,
            open_websocket_url(url, subprotocols=["realtime"]) as hostile,
        ):
            await still_answers(healthy)
            await hostile.send_message(frame)
            error = (await next_error(hostile))["error"]
            assert error["type"] == "invalid_request_error", error
            assert expected_message in error["message"]
            [detail] = error["details"]
            assert detail["loc"] == expected_loc
            # The hostile session itself goes on, and the healthy one never noticed.
            await still_answers(hostile)
            await still_answers(healthy)
            assert stack.state.active_sessions == 2


async def test_limits_are_inclusive(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    at_limits = {
        **session_update(
            instructions=constant("x" * MAX_INSTRUCTIONS_CHARS), voice="v" * MAX_VOICE_CHARS
        ),
        "event_id": "e" * MAX_EVENT_ID_CHARS,
    }
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        await ws.send_message(json.dumps(at_limits))
        reply = await receive_json(ws)
    assert reply["type"] == "session.updated"
    assert reply["session"]["voice"] == "v" * MAX_VOICE_CHARS


# ------------------------------------------------------------------ Origin (item 6)


async def open_with_origin(url: str, origin: str | None, **kwargs: Any) -> int | None:
    """Open a session with this Origin: ``None`` if it works, else the HTTP refusal's status."""
    headers = [(b"origin", origin.encode())] if origin is not None else []
    headers += kwargs.pop("extra_headers", [])
    try:
        async with open_websocket_url(
            url, subprotocols=["realtime"], extra_headers=headers, **kwargs
        ) as ws:
            await still_answers(ws)
    except ConnectionRejected as e:
        assert b"origin" in (e.body or b"")
        return e.status_code
    return None


async def test_foreign_origins_are_refused_before_the_upgrade(
    serve, all_down_settings: Settings
) -> None:
    base = await serve(all_down_settings)  # UNMUTE_CORS_ORIGINS: localhost and localhost:3000
    url = ws_url(base)
    port = int(base.rsplit(":", 1)[1])
    async with open_websocket_url(url, subprotocols=["realtime"]) as healthy:
        await still_answers(healthy)
        # Refused with 403, before the upgrade.
        for origin in (
            "https://evil.example",
            f"http://evil.example:{port}",
            f"https://127.0.0.1:{port}",  # another scheme
            f"http://127.0.0.1:{port + 1}",  # another port
            "http://127.0.0.1",  # the default port, 80
            "http://localhost:8080",  # not listed
            "null",  # a sandboxed page or a file
            "",
        ):
            assert await open_with_origin(url, origin) == 403, origin
        # Accepted: the server's own origin (the built-in page), the listed ones, and clients
        # that send no Origin (SDKs, the load generator).
        for origin in (
            f"http://127.0.0.1:{port}",
            f"HTTP://127.0.0.1:{port}",
            "http://localhost:3000",
            "http://localhost",
            None,
        ):
            assert await open_with_origin(url, origin) is None, origin
        await still_answers(healthy)


async def test_any_origin_with_a_star(serve, all_down_settings: Settings) -> None:
    base = await serve(replace(all_down_settings, cors_origins=("*",)))
    assert await open_with_origin(ws_url(base), "https://anywhere.example") is None


async def test_own_origin_behind_a_trusted_proxy(serve, all_down_settings: Settings) -> None:
    """Behind a proxy the page's origin is the proxy's: the forwarded host and scheme count,
    and only when the proxy is trusted."""
    forwarded = [(b"x-forwarded-host", b"voice.example.com"), (b"x-forwarded-proto", b"https")]
    trusted = ws_url(await serve(replace(all_down_settings, trusted_proxy_hops=1)))
    untrusted = ws_url(await serve(all_down_settings))
    page = "https://voice.example.com"
    assert await open_with_origin(trusted, page, extra_headers=forwarded) is None
    assert (
        await open_with_origin(trusted, "http://voice.example.com", extra_headers=forwarded) == 403
    )
    assert await open_with_origin(untrusted, page, extra_headers=forwarded) == 403


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://example.com", "ws", "example.com", True),
        ("http://example.com:80", "ws", "example.com", True),
        ("https://example.com", "wss", "example.com:443", True),
        ("https://Example.COM", "wss", "example.com", True),
        ("http://[::1]:8000", "ws", "[::1]:8000", True),
        ("http://example.com", "wss", "example.com", False),
        ("https://example.com:8443", "wss", "example.com", False),
        ("http://example.com.evil", "ws", "example.com", False),
        ("http://example.com:99999", "ws", "example.com", False),
        ("http://example.com:x", "ws", "example.com", False),
        ("null", "ws", "example.com", False),
        ("http://example.com", "ws", "", False),
    ],
)
def test_is_same_origin(origin: str, scheme: str, host: str, same: bool) -> None:
    assert is_same_origin(origin, scheme=scheme, host=host) is same
