"""The WebSocket plumbing shared by the moshi-server STT and TTS clients (docs/services.md).

:func:`open_moshi_socket` connects, upgrades with the ``kyutai-api-key`` header, waits for the
``Ready``/``Error`` handshake under one deadline, and yields a :class:`MoshiSocket` that sends
bytes and receives decoded messages. It is the one place where library exceptions become the
typed family of :mod:`unmute_trio.errors`:

============================================  =============================================
trio-websocket / OS / decoder                 raised as
============================================  =============================================
HTTP rejection of the upgrade (401, ...)      ``ServiceProtocolError`` (detail names status)
``Error("no free channels")`` before Ready    ``ServiceAtCapacity``
connect + upgrade + Ready over the deadline   ``ServiceTimeout``
refused, reset, TLS failure, closed, dropped  ``ServiceDisconnected`` (at once, also when the
                                              server closes before answering the upgrade)
undecodable message, text frame, other Error  ``ServiceProtocolError``
============================================  =============================================

Closing: on every exit path (normal, error, cancellation, timeout in the middle of the
handshake) the TCP connection is closed before the context manager returns. A normal exit sends
a close frame and waits (at most ``CLOSE_TIMEOUT_S``) for the server's reply. An exit by
exception closes the TCP connection at once, without the close handshake: a server that just
timed out should not delay the next discovery attempt, and barge-in should not wait for a
server that may be slow. Closing a trio socket takes effect before any checkpoint, so this
works under cancellation too and needs no shield; the server sees the disconnect and frees its
slot (the original leaked the socket when its handshake was cancelled).

A server that closes (or resets) the connection before its answer to the HTTP upgrade is
complete is reported as ``ServiceDisconnected`` at once, and one that refuses the upgrade with
a body ended by closing the connection as ``ServiceProtocolError``: trio-websocket itself would
keep waiting for the upgrade until the deadline (:class:`_UpgradeWatch`).

Connecting to one address of a multi-address service (see ``services.discovery``): ``address``
is the IP to dial, while the ``Host`` header and the TLS server name stay those of the URL, so
``wss://`` behind a proxy and certificates keep working.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio
import trio_websocket

from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceProtocolError,
    ServiceTimeout,
)
from unmute_trio.exception_groups import leaves, reraise
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.moshi import Error, Ready

log = logging.getLogger(__name__)

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)

API_KEY_HEADER = b"kyutai-api-key"
AT_CAPACITY_MESSAGE = "no free channels"  # moshi-server's Error text when all slots are taken
# Close codes after which a server-side close is an orderly end of stream: normal, going away,
# and "no status" (moshi-server sends an empty close frame).
CLEAN_CLOSE_CODES = frozenset({1000, 1001, 1005})
# How long a normal exit waits for the server to answer our close frame.
CLOSE_TIMEOUT_S = 1.0
# The largest moshi message we expect is a TTS Audio frame (~9.6 KB); 1 MiB leaves room for
# any future field without letting a broken server make us buffer without limit.
MAX_MESSAGE_BYTES = 1024 * 1024
# Messages trio-websocket buffers between its reader task and our receive(). 4 covers the
# burst of one STT step (Step, Word, EndWord, Marker); beyond it the reader stops reading and
# TCP flow control pushes back on the server.
MESSAGE_QUEUE_SIZE = 4

_default_ssl_context: ssl.SSLContext | None = None


def endpoint_url(base_url: str, path: str, query: str = "") -> str:
    """Append ``path`` (and ``query``) to a service URL that may carry a path prefix.

    ``endpoint_url("wss://host/stt-server/", "/api/asr-streaming")`` →
    ``"wss://host/stt-server/api/asr-streaming"``.
    """
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))


class MoshiTransport(Protocol[M_co]):
    """What an STT or TTS stream needs from its connection: bytes out, decoded messages in
    (``None`` once the server closed in order). :class:`MoshiSocket` is the WebSocket one;
    ``testing.in_memory`` has one that runs a simulated model in-process (no socket)."""

    service: str

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> M_co | None: ...


class MoshiSocket(Generic[M]):
    """One open, handshaken WebSocket to a moshi-server endpoint.

    One task may send while another receives; two concurrent senders (or receivers) are a bug.
    """

    def __init__(
        self,
        service: str,
        ws: trio_websocket.WebSocketConnection,
        decode: Callable[[bytes], M],
    ) -> None:
        self.service = service
        self._ws = ws
        self._decode = decode

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_message(data)
        except trio_websocket.ConnectionClosed as e:
            raise ServiceDisconnected(self.service, f"connection closed ({e.reason})") from None

    async def receive(self) -> M | None:
        """The next message, or ``None`` once the server has closed the stream in order.

        A close with an error code, or a dropped connection, raises ``ServiceDisconnected``.
        """
        try:
            data = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            if e.reason is not None and e.reason.code in CLEAN_CLOSE_CODES:
                return None
            raise ServiceDisconnected(self.service, f"connection lost ({e.reason})") from None
        if isinstance(data, str):
            raise ServiceProtocolError(self.service, "the server sent a text frame")
        try:
            return self._decode(data)
        except WireFormatError as e:
            raise ServiceProtocolError(self.service, e.message) from e


@asynccontextmanager
async def open_moshi_socket(
    service: str,
    url: str,
    decode: Callable[[bytes], M],
    *,
    api_key: str,
    handshake_timeout_s: float,
    address: str | None = None,
    send_after_ready: bytes | None = None,
) -> AsyncIterator[MoshiSocket[M]]:
    """Connect to ``url`` (``ws://`` or ``wss://``, path and query included) and wait for Ready.

    ``handshake_timeout_s`` bounds everything before the yield: TCP connect (and TLS), the HTTP
    upgrade, the Ready/Error answer and ``send_after_ready`` (sent after Ready, before any
    other message; the TTS uses it for a custom voice). ``address`` overrides the IP to dial.
    """
    try:
        async with trio.open_nursery() as nursery:
            stream: trio.abc.Stream | None = None
            ws: trio_websocket.WebSocketConnection | None = None
            exited_normally = False
            try:
                try:
                    with trio.fail_after(handshake_timeout_s):
                        stream = await _open_stream(service, url, address)
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            _UpgradeWatch(service, url, stream),  # type: ignore[arg-type]  # a Stream is all it uses
                            _host_header(url),
                            _request_target(url),
                            extra_headers=[(API_KEY_HEADER, api_key.encode())],
                            message_queue_size=MESSAGE_QUEUE_SIZE,
                            max_message_size=MAX_MESSAGE_BYTES,
                        )
                        socket = MoshiSocket(service, ws, decode)
                        await _expect_ready(socket)
                        if send_after_ready is not None:
                            await socket.send(send_after_ready)
                except trio.TooSlowError:
                    raise ServiceTimeout(
                        service, f"no Ready within {handshake_timeout_s:g} s from {url}"
                    ) from None
                yield socket
                exited_normally = True
            finally:
                await _close(ws if exited_normally else None, stream)
                nursery.cancel_scope.cancel()  # the reader task, if the close left it running
    except BaseExceptionGroup as group:
        # The nursery wraps whatever leaves it; callers want the one real exception. A failure
        # of the library's reader task (the upgrade rejected) is translated here.
        _, errors = group.split(trio.Cancelled)
        failures = leaves(errors) if errors is not None else []
        if len(failures) != 1:
            raise  # only cancellation (trio handles it), or several failures: a bug, keep all
        reraise(_translate_reader_error(service, url, failures[0]))


class _UpgradeWatch(trio.abc.Stream):
    """The TCP (or TLS) stream as trio-websocket sees it, watching the answer to the upgrade.

    trio-websocket waits for that answer on an event only its reader task sets; when the
    connection ends before the answer, the reader task returns quietly and the wait lasts until
    our handshake deadline. So, until the answer's head (up to its blank line) has arrived, an
    end of stream or a broken connection (also when sending the request) is raised from here as
    ``ServiceDisconnected``, which ends the reader task, and with it the handshake, at once.
    After a ``101`` head, bytes pass through untouched: trio-websocket reports a close as
    ``ConnectionClosed``, which :meth:`MoshiSocket.receive` translates. After a refusal's head
    (another status), the end of a body that lasts until the connection closes is raised as
    ``ServiceProtocolError`` naming the status, which trio-websocket would also wait for in
    vain.
    """

    # An upgrade answer's head is a few hundred bytes; past this, stop watching (the HTTP
    # parser refuses such a head anyway).
    MAX_HEAD_BYTES = 16 * 1024

    def __init__(self, service: str, url: str, stream: trio.abc.Stream) -> None:
        self._service = service
        self._url = url
        self._stream = stream
        self._head = bytearray()
        self._watching = True
        self._refused_with: int | None = None  # the status of a refusal's head

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._watching:
            await self._stream.send_all(data)
            return
        try:  # the upgrade request, to a server that may already have closed
            await self._stream.send_all(data)
        except trio.BrokenResourceError as e:
            raise ServiceDisconnected(
                self._service, f"connection lost during the WebSocket upgrade at {self._url}"
            ) from e

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._watching:
            return await self._stream.receive_some(max_bytes)
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as e:
            if self._refused_with is not None:
                raise self._refusal() from e
            raise ServiceDisconnected(
                self._service, f"connection lost during the WebSocket upgrade at {self._url}"
            ) from e
        if not data:
            if self._refused_with is not None:
                raise self._refusal()
            raise ServiceDisconnected(
                self._service,
                f"the server closed the connection before answering the upgrade at {self._url}",
            )
        if self._refused_with is None:
            self._read_head(data)
        return data

    def _read_head(self, data: bytes | bytearray) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            end = self._head.find(b"\n\n")
        if end < 0:
            if len(self._head) > self.MAX_HEAD_BYTES:
                self._watching = False
            return
        status_line = bytes(self._head).split(b"\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        self._head = bytearray()
        if 100 <= status < 200:
            # 101: upgraded. Another informational head (rare before a 101): leave the rest to
            # trio-websocket, as before.
            self._watching = False
        else:
            self._refused_with = status

    def _refusal(self) -> ServiceProtocolError:
        return ServiceProtocolError(
            self._service,
            f"the server refused the WebSocket upgrade with HTTP {self._refused_with} at"
            f" {self._url}",
        )


async def _expect_ready(socket: MoshiSocket[M]) -> None:
    first = await socket.receive()
    if isinstance(first, Ready):
        return
    if first is None:
        raise ServiceDisconnected(socket.service, "the server closed the connection before Ready")
    if isinstance(first, Error):
        if first.message == AT_CAPACITY_MESSAGE:
            raise ServiceAtCapacity(socket.service, first.message)
        raise ServiceProtocolError(socket.service, f"error instead of Ready: {first.message}")
    raise ServiceProtocolError(socket.service, f"expected Ready, got {type(first).__name__}")


async def _open_stream(service: str, url: str, address: str | None) -> trio.abc.Stream:
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


async def _close(
    ws: trio_websocket.WebSocketConnection | None, stream: trio.abc.Stream | None
) -> None:
    """Close handshake with ``ws`` if given (bounded), then close the TCP stream regardless."""
    try:
        if ws is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await ws.aclose()
    finally:
        # trio-websocket leaves the stream open when the server closed first, and ws.aclose()
        # stops early when cancelled: closing the stream ourselves covers every case.
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _host_header(url: str) -> str:
    # netloc keeps IPv6 brackets and omits the port when the URL does.
    return urlsplit(url).netloc.rpartition("@")[2]


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _translate_reader_error(service: str, url: str, exc: BaseException) -> BaseException:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        status = exc.status_code
        if status in (401, 403):
            detail = f"the server rejected the API key (HTTP {status}) at {url}"
        else:
            detail = f"the server refused the WebSocket upgrade with HTTP {status} at {url}"
        translated: BaseException = ServiceProtocolError(service, detail)
    elif isinstance(exc, trio_websocket.HandshakeError):
        translated = ServiceProtocolError(service, f"WebSocket handshake failed at {url}: {exc!r}")
    else:
        return exc  # ours, or the caller's: already what it should be
    translated.__cause__ = exc
    return translated
