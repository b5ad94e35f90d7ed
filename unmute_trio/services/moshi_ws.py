"""The WebSocket plumbing shared by the moshi-server STT and TTS clients (docs/services.md).

:func:`open_moshi_socket` connects, upgrades with the ``kyutai-api-key`` header, waits for the
``Ready``/``Error`` handshake under one deadline, and yields a :class:`MoshiSocket` that sends
bytes and receives decoded messages. It is the one place where socket, WebSocket and decoder
failures become the typed family of :mod:`unmute_trio.errors`:

============================================  =============================================
what happened                                 raised as
============================================  =============================================
HTTP refusal of the upgrade (401, 503, ...)   ``ServiceProtocolError`` (detail names status)
``Error("no free channels")`` before Ready    ``ServiceAtCapacity``
connect + upgrade + Ready over the deadline   ``ServiceTimeout``
refused, reset, TLS failure, closed, dropped  ``ServiceDisconnected`` (at once, also when the
                                              server closes before answering the upgrade)
undecodable message, text frame, other Error  ``ServiceProtocolError``
============================================  =============================================

The WebSocket is driven in the caller's tasks: :meth:`MoshiSocket.receive` reads the TCP stream
itself, and :meth:`MoshiSocket.send` writes to it. A general client such as trio-websocket (used
here before) runs a reader task per connection that hands every message over through a channel;
with ~30 messages a second per session from the STT and the TTS, that task switch, its lock and
its channel cost about a fifth of the time to receive a message (docs/benchmarks.md). Nothing is
read until the caller asks, so TCP flow control holds a server back when its reader falls
behind, with no queue in between. The connection and the upgrade (HTTP/1.1 through h11) are
``services.ws_connect``'s; the frames are ``services.ws_frames`` (wsproto, used before, cost
3 to 8 times as much per message).

Closing: on every exit path (normal, error, cancellation, timeout in the middle of the
handshake) the TCP connection is closed before the context manager returns. A normal exit sends
a close frame and waits (at most ``CLOSE_TIMEOUT_S``) for the server's reply. An exit by
exception closes the TCP connection at once, without the close handshake: a server that just
timed out should not delay the next discovery attempt, and barge-in should not wait for a
server that may be slow. Closing a trio socket takes effect before any checkpoint, so this
works under cancellation too and needs no shield; the server sees the disconnect and frees its
slot (the original leaked the socket when its handshake was cancelled).

A server that closes (or resets) the connection before its answer to the HTTP upgrade is
complete is reported as ``ServiceDisconnected`` at once, and one that refuses the upgrade as
``ServiceProtocolError`` naming the status, from its status line: the body of the refusal, which
may never end, is not waited for.

Connecting to one address of a multi-address service (see ``services.discovery``): ``address``
is the IP to dial, while the ``Host`` header and the TLS server name stay those of the URL, so
``wss://`` behind a proxy and certificates keep working.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceProtocolError,
    ServiceTimeout,
)
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.moshi import Error, Ready
from unmute_trio.services import socket_receive, socket_send
from unmute_trio.services.ws_connect import open_stream, upgrade
from unmute_trio.services.ws_frames import (
    ABNORMAL_CLOSURE,
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    client_frame,
    close_payload,
    parse_close,
)

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
# Bytes asked of the TCP stream per read: several messages when the server is ahead.
RECEIVE_BYTES = 65536


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


def _describe_close(code: int, reason: str | None) -> str:
    return f"code {code}" + (f", {reason!r}" if reason else "")


class MoshiSocket(Generic[M]):
    """One open, handshaken WebSocket to a moshi-server endpoint.

    One task may send while another receives; two concurrent senders (or receivers) are a bug.
    The receiver answers pings itself; its pong waits for a send in progress (a lock taken
    without a checkpoint when free, which is always, but for that pong).
    """

    def __init__(
        self,
        service: str,
        stream: trio.abc.Stream,
        decode: Callable[[bytes], M],
        reader: FrameReader,
    ) -> None:
        self.service = service
        self._stream = stream
        self._decode = decode
        self._reader = reader  # holds what was received and not handled yet
        self._send_lock = trio.Lock()
        self._sent_close = False  # after our close frame, nothing more may be sent (§5.5.1)
        # Set once the stream has ended: the close code and reason, for every later call.
        self.closed: tuple[int, str | None] | None = None

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        if self.closed is not None or self._sent_close:
            raise ServiceDisconnected(self.service, f"connection closed ({self._closed_text()})")
        await self._send_bytes(client_frame(BINARY, data))

    async def _send_bytes(self, data: bytes) -> None:
        await socket_send.take_lock(self._send_lock)  # only a pong meets a send in progress
        try:
            await socket_send.send_all(self._stream, data)  # under the send lock
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self._lost()
            raise ServiceDisconnected(
                self.service, f"connection closed ({self._closed_text()})"
            ) from e
        finally:
            self._send_lock.release()

    # ------------------------------------------------------------------ receiving

    async def receive(self) -> M | None:
        """The next message, or ``None`` once the server has closed the stream in order.

        A close with an error code, or a dropped connection, raises ``ServiceDisconnected``.
        """
        while True:
            if self.closed is not None:
                self._raise_unless_clean()
                return None
            frame = self._next_frame()
            if frame is None:
                await self._read()
                continue
            opcode, payload = frame
            if opcode == BINARY:
                try:
                    return self._decode(payload)
                except WireFormatError as e:
                    raise ServiceProtocolError(self.service, e.message) from e
            if opcode == TEXT:
                raise ServiceProtocolError(self.service, "the server sent a text frame")
            if opcode == CLOSE:
                self._closed_by_server(payload)
                if not self._sent_close:
                    # Our half of the close handshake, echoing the code; the server may
                    # already be gone.
                    self._sent_close = True
                    try:
                        await self._send_bytes(client_frame(CLOSE, payload[:2]))
                    except ServiceDisconnected:
                        pass
            elif opcode == PING and not self._sent_close:
                await self._send_bytes(client_frame(PONG, payload))
            # A pong: nothing to do.

    def _next_frame(self) -> tuple[int, bytes] | None:
        try:
            return self._reader.next()
        except FrameError as e:
            raise ServiceProtocolError(self.service, f"broken WebSocket stream: {e}") from e

    def _closed_by_server(self, payload: bytes) -> None:
        try:
            self.closed = parse_close(payload)
        except FrameError as e:
            self._lost()
            raise ServiceProtocolError(self.service, f"broken WebSocket stream: {e}") from e

    async def _read(self) -> None:
        try:
            data = await socket_receive.receive_some(self._stream, RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self._lost()
            return
        self._reader.feed(data)

    def _lost(self) -> None:
        """The TCP stream ended (or broke) without a close frame: an abnormal closure."""
        if self.closed is None:
            self.closed = (ABNORMAL_CLOSURE, None)

    def _raise_unless_clean(self) -> None:
        assert self.closed is not None
        if self.closed[0] in CLEAN_CLOSE_CODES:
            return
        raise ServiceDisconnected(self.service, f"connection lost ({self._closed_text()})")

    def _closed_text(self) -> str:
        if self.closed is None:
            return "closed by us"
        return _describe_close(*self.closed)

    # ------------------------------------------------------------------ closing

    async def close_in_order(self) -> None:
        """Send our close frame and wait for the server's (or the end of the stream)."""
        if self._sent_close or self.closed is not None:
            return  # the server closed first, and receive() answered
        self._sent_close = True
        try:
            await self._send_bytes(client_frame(CLOSE, close_payload(1000)))
        except ServiceDisconnected:
            return
        while self.closed is None:
            frame = self._next_frame()
            if frame is None:
                await self._read()
            elif frame[0] == CLOSE:
                self._closed_by_server(frame[1])


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
    stream: trio.abc.Stream | None = None
    socket: MoshiSocket[M] | None = None
    exited_normally = False
    try:
        try:
            with trio.fail_after(handshake_timeout_s):
                stream = await open_stream(service, url, address)
                headers = [(API_KEY_HEADER, api_key.encode())]
                reader = await upgrade(service, url, stream, headers, MAX_MESSAGE_BYTES)
                socket = MoshiSocket(service, stream, decode, reader)
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
        try:
            if exited_normally and socket is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    try:
                        await socket.close_in_order()
                    except ServiceProtocolError:
                        pass  # a broken stream while closing: the TCP close below ends it
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)


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
