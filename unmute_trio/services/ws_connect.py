"""Opening a client WebSocket: the TCP (and TLS) connection and the HTTP/1.1 upgrade, with h11.

Used by ``services.moshi_ws`` for the STT and TTS; the frames that follow are
``services.ws_frames``'. Failures are raised as the ``ServiceError`` family, each at once: a
connection refused, reset or closed is ``ServiceDisconnected``; a refusal of the upgrade (any
status but 101) is ``ServiceProtocolError`` naming the status, from its status line (its body,
which may never end, is not waited for; 401 and 403 are named a rejected API key); a 101 that is
not a WebSocket answer to our key (RFC 6455 §4.1), or that chooses an extension or subprotocol we
did not offer, is ``ServiceProtocolError``.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import urlsplit

import h11
import trio
from wsproto.utilities import generate_accept_token

from unmute_trio.errors import ServiceDisconnected, ServiceProtocolError
from unmute_trio.services.ws_frames import FrameReader

# Bytes asked of the TCP stream per read while the answer is coming.
RECEIVE_BYTES = 65536

_default_ssl_context: ssl.SSLContext | None = None


async def open_stream(service: str, url: str, address: str | None) -> trio.abc.Stream:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL with a host: {url!r}")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    target = address or parts.hostname
    try:
        tcp = await trio.open_tcp_stream(target, port)
    except OSError as e:
        raise ServiceDisconnected(service, f"cannot connect to {target} port {port}: {e}") from e
    if not tls:
        return tcp
    tls_stream = trio.SSLStream(
        tcp, _ssl_context(), server_hostname=parts.hostname, https_compatible=True
    )
    try:
        await tls_stream.do_handshake()
    except trio.BrokenResourceError as e:
        await trio.aclose_forcefully(tls_stream)
        raise ServiceDisconnected(service, f"TLS handshake with {parts.hostname} failed") from e
    except BaseException:
        await trio.aclose_forcefully(tls_stream)
        raise
    return tls_stream


def _ssl_context() -> ssl.SSLContext:
    # Loading the CA store takes milliseconds; do it once per process.
    global _default_ssl_context
    if _default_ssl_context is None:
        _default_ssl_context = ssl.create_default_context()
    return _default_ssl_context


def _host_header(url: str) -> str:
    # netloc keeps IPv6 brackets and omits the port when the URL does.
    return urlsplit(url).netloc.rpartition("@")[2]


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def upgrade(
    service: str,
    url: str,
    stream: trio.abc.Stream,
    extra_headers: list[tuple[bytes, bytes]],
    max_message_bytes: int,
) -> FrameReader:
    """Send the HTTP upgrade and read the answer. Once it is accepted, the frame reader for the
    connection, holding what the server sent after its answer (often a first message)."""
    key = base64.b64encode(os.urandom(16))
    http = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=_request_target(url),
        headers=[
            (b"Host", _host_header(url).encode()),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key),
            (b"Sec-WebSocket-Version", b"13"),
            *extra_headers,
        ],
    )
    try:
        await stream.send_all(http.send(request) + (http.send(h11.EndOfMessage()) or b""))
    except trio.BrokenResourceError as e:
        raise ServiceDisconnected(
            service, f"connection lost during the WebSocket upgrade at {url}"
        ) from e
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as e:
            raise ServiceProtocolError(service, f"WebSocket handshake failed at {url}: {e}") from e
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except trio.BrokenResourceError as e:
                raise ServiceDisconnected(
                    service, f"connection lost during the WebSocket upgrade at {url}"
                ) from e
            if not data:
                raise ServiceDisconnected(
                    service,
                    f"the server closed the connection before answering the upgrade at {url}",
                )
            http.receive_data(bytes(data))
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            check_accept(service, url, event.headers, key)
            reader = FrameReader(max_message_bytes)
            reader.feed(http.trailing_data[0])  # what followed the answer in the same read
            return reader
        elif isinstance(event, h11.Response):
            # A refusal: its status says it all, and the body (which may never end) is not
            # waited for; the connection is closed on the way out.
            _refuse(service, url, event.status_code)
        # Other 1xx answers (100, 103): read on.


def check_accept(
    service: str, url: str, headers: Iterable[tuple[bytes, bytes]], key: bytes
) -> None:
    """The 101 must name the WebSocket protocol and prove it read our key (RFC 6455 §4.1)."""
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    expected = generate_accept_token(key)
    connection_tokens = {
        token.strip().lower()
        for value in fields.get(b"connection", [])
        for token in value.split(b",")
    }
    if [v.lower() for v in fields.get(b"upgrade", [])] != [b"websocket"]:
        problem = "the 101 answer does not upgrade to websocket"
    elif b"upgrade" not in connection_tokens:
        problem = "the 101 answer lacks 'Connection: Upgrade'"
    elif fields.get(b"sec-websocket-accept") != [expected]:
        problem = "the 101 answer's Sec-WebSocket-Accept does not match our key"
    elif b"sec-websocket-extensions" in fields:
        problem = "the server chose an extension we did not offer"
    elif b"sec-websocket-protocol" in fields:
        problem = "the server chose a subprotocol we did not offer"
    else:
        return
    raise ServiceProtocolError(service, f"WebSocket handshake failed at {url}: {problem}")


def _refuse(service: str, url: str, status: int) -> NoReturn:
    if status in (401, 403):
        detail = f"the server rejected the API key (HTTP {status}) at {url}"
    else:
        detail = f"the server refused the WebSocket upgrade with HTTP {status} at {url}"
    raise ServiceProtocolError(service, detail)
