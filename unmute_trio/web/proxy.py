"""Running behind reverse proxies: trusted forwarding headers and path prefixes (ASGI middleware).

Two jobs, both on the ASGI scope before Quart sees it:

1. **Forwarding headers**, only when ``UNMUTE_TRUSTED_PROXY_HOPS`` (N) is above 0. Each proxy in
   front of the server appends one entry, so the Nth entry from the right is the one written by
   the outermost proxy we trust; entries further left came from the client and may be forged.
   ``x-forwarded`` mode reads ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` / ``-Prefix``;
   ``forwarded`` mode reads RFC 7239 ``Forwarded`` (``for``, ``proto``, ``host``), whose
   elements may be quoted (``for="[2001:db8::1]:4711"``) and whose keys are case-insensitive.
   A header with fewer than N entries is ignored: the request did not pass through N proxies.

2. **The scheme of WebSocket scopes.** Proxies say ``X-Forwarded-Proto: https`` for a WebSocket
   upgrade too (nginx does; Traefik says ``wss``). Copied verbatim into a ``websocket`` scope,
   as hypercorn's ``ProxyFixMiddleware`` does, it makes werkzeug treat the upgrade as plain HTTP
   and Quart answers 400 to every WebSocket. The scheme is mapped to the scope's kind instead:
   ``https``/``wss`` → ``wss`` for WebSockets and ``https`` for HTTP, likewise for plain.

Path prefixes: Traefik strips ``/api`` before forwarding (as in the original deployment), so
the app sees ``/v1/realtime`` and nothing is needed. A proxy that forwards ``/api/v1/realtime``
unchanged works with hypercorn's ``root_path = "/api"``, which Quart strips. This middleware
also makes the mixed case work — a root path set (by hypercorn or by a trusted
``X-Forwarded-Prefix``) and a path already stripped by the proxy — by putting the prefix back in
front of the path, since Quart answers 404 to a path outside its root path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from unmute_trio.settings import ProxyMode

PROXY_MODES: tuple[ProxyMode, ...] = ("x-forwarded", "forwarded")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_SCHEMES = {
    "http": {"http": "http", "https": "https", "ws": "http", "wss": "https"},
    "websocket": {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"},
}


class ProxyHeadersMiddleware:
    """Wraps an ASGI app (``app.asgi_app``); see the module docstring for what it rewrites."""

    def __init__(self, app: ASGIApp, *, trusted_hops: int, mode: ProxyMode) -> None:
        if trusted_hops < 0:
            raise ValueError("trusted_hops must be 0 or more")
        if mode not in PROXY_MODES:
            raise ValueError(f"mode must be one of {PROXY_MODES}")
        self.app = app
        self.trusted_hops = trusted_hops
        self.mode = mode

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in _SCHEMES:
            scope = rewrite_scope(scope, trusted_hops=self.trusted_hops, mode=self.mode)
        await self.app(scope, receive, send)


def rewrite_scope(scope: Scope, *, trusted_hops: int, mode: ProxyMode) -> Scope:
    """A copy of an ``http`` or ``websocket`` scope as the outermost trusted proxy saw it."""
    scope = dict(scope)
    if trusted_hops > 0:
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        if mode == "forwarded":
            forwarded = _forwarded_element(headers, trusted_hops)
            client, proto, host, prefix = (
                forwarded.get("for"),
                forwarded.get("proto"),
                forwarded.get("host"),
                None,
            )
        else:
            client = _trusted_entry(headers, b"x-forwarded-for", trusted_hops)
            proto = _trusted_entry(headers, b"x-forwarded-proto", trusted_hops)
            host = _trusted_entry(headers, b"x-forwarded-host", trusted_hops)
            prefix = _trusted_entry(headers, b"x-forwarded-prefix", trusted_hops)
        if client:
            scope["client"] = _host_and_port(client)
        if proto:
            scheme = _SCHEMES[scope["type"]].get(proto.lower())
            if scheme is not None:
                scope["scheme"] = scheme
        if host:
            headers = [(k, v) for k, v in headers if k.lower() != b"host"]
            headers.append((b"host", host.encode("latin-1")))
            scope["headers"] = headers
        if prefix:
            scope["root_path"] = "/" + prefix.strip("/") if prefix.strip("/") else ""
    _restore_prefix(scope)
    return scope


def _restore_prefix(scope: Scope) -> None:
    root_path = scope.get("root_path", "")
    path: str = scope["path"]
    if not root_path or path == root_path or path.startswith(root_path + "/"):
        return
    # The proxy already stripped the prefix: put it back so that Quart strips it once.
    scope["path"] = root_path + path
    raw_path = scope.get("raw_path")
    if raw_path is not None:
        scope["raw_path"] = root_path.encode("ascii", "ignore") + raw_path


def _header_entries(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """All comma-separated entries of every header line named ``name``, in order (quotes
    respected, so a comma inside a quoted string does not split)."""
    entries: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            entries.extend(_split_outside_quotes(value.decode("latin-1"), ","))
    return [e.strip() for e in entries]


def _trusted_entry(headers: list[tuple[bytes, bytes]], name: bytes, hops: int) -> str | None:
    entries = _header_entries(headers, name)
    return entries[-hops] if len(entries) >= hops else None


def _forwarded_element(headers: list[tuple[bytes, bytes]], hops: int) -> dict[str, str]:
    element = _trusted_entry(headers, b"forwarded", hops)
    if element is None:
        return {}
    pairs: dict[str, str] = {}
    for pair in _split_outside_quotes(element, ";"):
        key, sep, value = pair.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        pairs[key.strip().lower()] = value
    return pairs


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _host_and_port(node: str) -> tuple[str, int]:
    """``203.0.113.7``, ``203.0.113.7:4711``, ``[2001:db8::1]:4711`` or ``2001:db8::1`` (an
    unbracketed IPv6 address has no port) → (host, port or 0)."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() else 0
