"""Behind reverse proxies: trusted forwarding headers, the WebSocket scheme, path prefixes.

The WebSocket tests go through a real hypercorn socket with the headers a proxy adds; the app
records what Quart made of the scope (scheme, client address, host, root path)."""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest
import trio
from quart import request
from trio_websocket import open_websocket_url

from tests.conftest import replace
from unmute_trio.protocol.dialects import Dialect
from unmute_trio.settings import Settings, SettingsError
from unmute_trio.testing.protocol_only import protocol_only_session
from unmute_trio.testing.server import serve_app
from unmute_trio.web.app import create_app
from unmute_trio.web.proxy import rewrite_scope
from unmute_trio.web.realtime import AsgiRealtimeSocket
from unmute_trio.web.state import AppState, RealtimeSocket

SESSION_UPDATE = {
    "type": "session.update",
    "session": {"instructions": None, "voice": None, "allow_recording": False},
}


async def serve_recording(
    nursery: trio.Nursery, settings: Settings, **config: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Serve the app; each session records how the app saw its WebSocket request."""
    seen: list[dict[str, Any]] = []

    async def recording_session(
        socket: RealtimeSocket, st: AppState, dialect: Dialect = "unmute"
    ) -> None:
        assert isinstance(socket, AsgiRealtimeSocket)
        seen.append(
            {
                "scheme": socket.request["scheme"],
                "remote_addr": socket.request["client"],
                "host": socket.request["host"],
                "root_path": socket.request["root_path"],
                # The path within the app, as Quart's routes saw it.
                "path": socket.request["path"].removeprefix(socket.request["root_path"]),
            }
        )
        await protocol_only_session(socket, st, dialect)

    app = create_app(settings, session_runner=recording_session)

    @app.get("/test-echo-request")
    async def echo_request() -> dict[str, str]:
        # How the app saw a plain HTTP request (scheme and client after the proxy rewrite).
        return {"scheme": request.scheme, "remote_addr": request.remote_addr or ""}

    port = await nursery.start(functools.partial(serve_app, app, **config))
    return f"127.0.0.1:{port}", seen


async def session_round_trip(url: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    with trio.fail_after(2):
        async with open_websocket_url(url, subprotocols=["realtime"], extra_headers=headers) as ws:
            await ws.send_message(json.dumps(SESSION_UPDATE))
            return json.loads(await ws.get_message())


@pytest.mark.parametrize(
    ("proto", "scheme"), [("https", "wss"), ("http", "ws"), ("wss", "wss"), ("ws", "ws")]
)
async def test_websocket_works_behind_a_proxy_with_x_forwarded_headers(
    nursery: trio.Nursery, all_down_settings: Settings, proto: str, scheme: str
) -> None:
    settings = replace(all_down_settings, trusted_proxy_hops=1)
    address, seen = await serve_recording(nursery, settings)
    headers = [
        (b"X-Forwarded-For", b"198.51.100.7"),
        (b"X-Forwarded-Proto", proto.encode()),
        (b"X-Forwarded-Host", b"voice.example.com"),
    ]
    reply = await session_round_trip(f"ws://{address}/v1/realtime", headers)
    assert reply["type"] == "session.updated"
    assert seen == [
        {
            "scheme": scheme,
            "remote_addr": "198.51.100.7",
            "host": "voice.example.com",
            "root_path": "",
            "path": "/v1/realtime",
        }
    ]


async def test_websocket_works_with_the_forwarded_header(
    nursery: trio.Nursery, all_down_settings: Settings
) -> None:
    settings = replace(all_down_settings, trusted_proxy_hops=1, proxy_headers="forwarded")
    address, seen = await serve_recording(nursery, settings)
    forwarded = b'for="[2001:db8::7]:4711";Proto=https;host=voice.example.com'
    reply = await session_round_trip(f"ws://{address}/v1/realtime", [(b"Forwarded", forwarded)])
    assert reply["type"] == "session.updated"
    assert seen[0]["scheme"] == "wss"
    assert seen[0]["remote_addr"] == "2001:db8::7"
    assert seen[0]["host"] == "voice.example.com"


async def test_forwarding_headers_are_ignored_unless_trusted(
    nursery: trio.Nursery, all_down_settings: Settings
) -> None:
    address, seen = await serve_recording(nursery, all_down_settings)  # 0 hops: the default
    headers = [(b"X-Forwarded-For", b"198.51.100.7"), (b"X-Forwarded-Proto", b"https")]
    await session_round_trip(f"ws://{address}/v1/realtime", headers)
    assert seen[0]["scheme"] == "ws"
    assert seen[0]["remote_addr"] == "127.0.0.1"
    assert seen[0]["host"] == address


async def test_http_requests_behind_an_https_proxy(
    nursery: trio.Nursery, all_down_settings: Settings
) -> None:
    settings = replace(all_down_settings, trusted_proxy_hops=1)
    address, _ = await serve_recording(nursery, settings)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
    async with httpx.AsyncClient(timeout=2) as http:
        response = await http.get(f"http://{address}/test-echo-request", headers=headers)
        ws_scheme = await http.get(
            f"http://{address}/test-echo-request", headers={"X-Forwarded-Proto": "wss"}
        )
    assert response.json() == {"scheme": "https", "remote_addr": "198.51.100.7"}
    # A WebSocket scheme from the proxy becomes its HTTP counterpart for an HTTP request.
    assert ws_scheme.json()["scheme"] == "https"


@pytest.mark.parametrize("path", ["/api/v1/realtime", "/v1/realtime"])
async def test_mounted_under_a_prefix_with_hypercorn_root_path(
    nursery: trio.Nursery, all_down_settings: Settings, path: str
) -> None:
    """A proxy that keeps ``/api`` and one that strips it both reach the app."""
    address, seen = await serve_recording(nursery, all_down_settings, root_path="/api")
    reply = await session_round_trip(f"ws://{address}{path}", [])
    assert reply["type"] == "session.updated"
    assert seen[0]["root_path"] == "/api"
    assert seen[0]["path"] == "/v1/realtime"
    async with httpx.AsyncClient(timeout=2) as http:
        for http_path in ("/api/", "/"):
            assert (await http.get(f"http://{address}{http_path}")).status_code == 200


async def test_trusted_x_forwarded_prefix_sets_the_root_path(
    nursery: trio.Nursery, all_down_settings: Settings
) -> None:
    """Traefik's stripprefix middleware strips ``/api`` and says so in X-Forwarded-Prefix."""
    settings = replace(all_down_settings, trusted_proxy_hops=1)
    address, seen = await serve_recording(nursery, settings)
    reply = await session_round_trip(
        f"ws://{address}/v1/realtime", [(b"X-Forwarded-Prefix", b"/api")]
    )
    assert reply["type"] == "session.updated"
    assert (seen[0]["root_path"], seen[0]["path"]) == ("/api", "/v1/realtime")


# ------------------------------------------------------------------ the scope rewrite alone


def scope(kind: str = "websocket", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": kind,
        "scheme": "ws" if kind == "websocket" else "http",
        "path": "/v1/realtime",
        "raw_path": b"/v1/realtime",
        "root_path": "",
        "client": ("10.0.0.2", 5555),
        "headers": [(b"host", b"backend:8000"), *(headers or [])],
    }


def test_the_nth_entry_from_the_right_is_trusted() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7"), (b"x-forwarded-for", b"10.0.0.9")]
    out = rewrite_scope(scope(headers=headers), trusted_hops=2, mode="x-forwarded")
    assert out["client"] == ("198.51.100.7", 0)


def test_fewer_entries_than_hops_are_ignored() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"https")]
    out = rewrite_scope(scope(headers=headers), trusted_hops=2, mode="x-forwarded")
    assert out["client"] == ("10.0.0.2", 5555)
    assert out["scheme"] == "ws"


def test_the_original_scope_is_not_modified() -> None:
    original = scope(headers=[(b"x-forwarded-host", b"voice.example.com")])
    before = repr(original)
    rewrite_scope(original, trusted_hops=1, mode="x-forwarded")
    assert repr(original) == before


def test_forwarded_elements_respect_quotes_and_case() -> None:
    value = b'for="203.0.113.9:80";proto=http, FOR="[2001:db8::1]";PROTO=HTTPS;by="a,b"'
    out = rewrite_scope(scope("http", [(b"forwarded", value)]), trusted_hops=1, mode="forwarded")
    assert out["client"] == ("2001:db8::1", 0)
    assert out["scheme"] == "https"
    out = rewrite_scope(scope("http", [(b"forwarded", value)]), trusted_hops=2, mode="forwarded")
    assert out["client"] == ("203.0.113.9", 80)
    assert out["scheme"] == "http"


def test_modes_read_only_their_own_headers() -> None:
    headers = [(b"forwarded", b"for=198.51.100.7"), (b"x-forwarded-for", b"203.0.113.9")]
    assert rewrite_scope(scope(headers=headers), trusted_hops=1, mode="x-forwarded")["client"] == (
        "203.0.113.9",
        0,
    )
    assert rewrite_scope(scope(headers=headers), trusted_hops=1, mode="forwarded")["client"] == (
        "198.51.100.7",
        0,
    )


def test_an_unknown_scheme_is_ignored() -> None:
    headers = [(b"x-forwarded-proto", b"gopher")]
    assert (
        rewrite_scope(scope(headers=headers), trusted_hops=1, mode="x-forwarded")["scheme"] == "ws"
    )


def test_http_scopes_get_http_schemes_even_from_ws_values() -> None:
    headers = [(b"x-forwarded-proto", b"wss")]
    out = rewrite_scope(scope("http", headers), trusted_hops=1, mode="x-forwarded")
    assert out["scheme"] == "https"


def test_settings_read_the_proxy_and_drain_variables() -> None:
    env = {
        "UNMUTE_TRUSTED_PROXY_HOPS": "2",
        "UNMUTE_PROXY_HEADERS": "Forwarded",
        "UNMUTE_DRAIN_TIMEOUT_S": "25",
    }
    settings = Settings.from_env(env)
    assert (settings.trusted_proxy_hops, settings.proxy_headers) == (2, "forwarded")
    assert settings.drain_timeout_s == 25.0
    defaults = Settings.from_env({})
    assert (defaults.trusted_proxy_hops, defaults.proxy_headers) == (0, "x-forwarded")
    for variable, value in [
        ("UNMUTE_TRUSTED_PROXY_HOPS", "-1"),
        ("UNMUTE_PROXY_HEADERS", "x-real-ip"),
        ("UNMUTE_DRAIN_TIMEOUT_S", "0"),
    ]:
        with pytest.raises(SettingsError) as e:
            Settings.from_env({variable: value})
        assert e.value.variable == variable
