"""Fixes for hypercorn (checked on 0.18.0 with Quart-Trio 0.12), applied when the app is created.

1. An oversized WebSocket message leaks the session. When a client sends a message larger than
   ``websocket_max_message_size``, hypercorn sends close 1009 but never ends the stream: every
   further chunk of the message triggers another close, the ASGI app is never told
   ``websocket.disconnect``, and even the client dropping TCP does not end it. Each such
   message would hold a session (and its slot under the session limit) forever. The fix ends
   the stream right after the 1009 close, the way hypercorn itself ends it after a normal close
   handshake, so the app is cancelled and the connection closed.

2. A connection is not freed, nor its keep-alive timer started, after a response. hypercorn
   does its end-of-request bookkeeping inside the app's task, right after telling the app
   ``http.disconnect``, and Quart-Trio answers that by cancelling the task: the bookkeeping is
   cancelled half-way. After a response sent before the request body is complete (408 for a
   stalled upload, 413, 404), the close of the connection is lost: the socket stays open and
   hypercorn reads it with no time limit for as long as the client keeps silent. After any
   other response, the restart of the keep-alive timer is lost: an idle keep-alive connection
   is never closed (``keep_alive_timeout`` does nothing). The fix shields hypercorn's
   connection events ``Closed`` and ``Updated`` from that cancellation (bounded by
   :data:`BOOKKEEPING_TIMEOUT_S`; they close a socket or restart a timer, which is immediate,
   but a TLS close_notify to a client that does not read may not be).

3. Not a bug, a cost: hypercorn wraps every read of a connection in ``trio.fail_after(read_timeout
   or inf)``, a generator context manager and a cancel scope per read, even when no read timeout
   is configured (ours is unset on purpose, hypercorn.toml). A browser session sends 25 messages
   a second, and py-spy put those two wrappers at 2.3 % of the server's CPU at 40 sessions. With
   ``read_timeout`` unset the patched loop reads without them; with it set, hypercorn's own loop
   runs unchanged. The patched loop also reads each socket only once it is readable
   (``services/socket_receive.py``): a browser's socket is idle when read, and trio's first
   ``recv`` on it failed every time.

4. Also a cost: every message a WebSocket client sends reaches the app through a memory channel
   that hypercorn fills with ``await send()``, which passes through trio's scheduler even when
   there is room. The patched hand-over puts the message in without that round when there is
   room, and waits as before when the queue is full; the app's side reads the queue the same way
   (``web/realtime.py``). HTTP keeps hypercorn's own hand-over.

5. Also a cost: hypercorn reads and writes WebSocket frames with wsproto, whose per-message work
   was most of hypercorn's share of the server's CPU (py-spy at 40 sessions: 13.3 % reading
   browsers). Once a handshake is accepted, the connection is ``web/ws_connection.py``'s, on our
   own frame codec, with the same events for hypercorn. For that, and for the CPU it costs
   itself, the handshake declines permessage-deflate, which every browser and the OpenAI SDK
   offer: what a session sends is mostly base64 Opus, which deflate shrinks by about a fifth at
   the price of a zlib call per message in each direction. The client is told by the absence
   of the extension in the 101 answer (RFC 7692 §5), and carries on uncompressed.

6. Also a cost, on the way out: each WebSocket message hypercorn writes takes two scheduling
   rounds, one for its connection's send lock (``async with``) and one for trio's socket send,
   even when the lock is free and the kernel takes the bytes at once. A round is every other
   runnable task's turn: under load, a simulator writing a flush's eight Steps waited ~90 ms
   per Step. WebSocket bytes are now written under the same lock, taken without a round when
   free, by ``services.socket_send.write_now``, and only what the kernel did not take goes
   through trio's (shielded) ``send_all``. HTTP keeps hypercorn's own path: taking the free lock
   without its round there made a client's end of stream after a keep-alive request sometimes
   leave the connection open.

7. Also a cost, on the way in: each read of an upgraded WebSocket connection went through
   hypercorn's protocol wrapper and its HTTP/1.1 protocol, which copy the bytes into a buffer,
   wrap them in an event and hand them to the WebSocket stream, then look again and find
   nothing (two events, two buffer copies and a chain of type checks per browser message). The
   patched read loop (fix 3) hands the bytes to the WebSocket stream itself, as that protocol
   would; the end of the stream, and everything before the upgrade, still go its way.

``apply()`` is idempotent (each patch carries a mark). ``testing.server.serve_app`` applies the
fixes too, so the simulators and local engines run on the same hypercorn as the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol import h11 as h11_protocol
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import Data, StreamClosed
from hypercorn.trio import task_group, tcp_server
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

from unmute_trio.services import socket_receive, socket_send
from unmute_trio.web.ws_connection import ServerConnection

_APPLIED_MARK = "_unmute_trio_fixed"
# Longest hypercorn's close of a connection (or restart of its timer) may take, shielded.
BOOKKEEPING_TIMEOUT_S = 1.0
# The message limit a handshake passes to its connection, set by WSStream._accept from its config.
_MAX_MESSAGE_ATTR = "_unmute_trio_max_message_bytes"


@dataclass(frozen=True)
class _WebSocketBytes(RawData):
    """Bytes of an upgraded WebSocket connection on their way to the socket (fix 6)."""


def apply() -> None:
    _end_stream_after_message_too_big()
    _shield_connection_bookkeeping()
    _write_websocket_bytes_without_scheduling_rounds()
    _read_without_an_unbounded_timer()
    _hand_over_messages_without_a_scheduling_round()
    _serve_frames_with_our_codec()


def _patch(owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` with ``wrap(original)``, once: the replacement carries a mark."""
    original = getattr(owner, name)
    if getattr(original, _APPLIED_MARK, False):
        return
    patched = wrap(original)
    setattr(patched, _APPLIED_MARK, True)
    setattr(owner, name, patched)


def _end_stream_after_message_too_big() -> None:
    def wrap(original: Any) -> Any:
        async def send_and_end_on_too_big(self: Any, event: Any) -> None:
            await original(self, event)
            if (
                isinstance(event, CloseConnection)
                and event.code == CloseReason.MESSAGE_TOO_BIG
                and not self.closed
            ):
                await self.send(StreamClosed(stream_id=self.stream_id))

        return send_and_end_on_too_big

    _patch(ws_stream.WSStream, "_send_wsproto_event", wrap)


def _shield_connection_bookkeeping() -> None:
    def wrap(original: Any) -> Any:
        async def protocol_send_shielded(self: Any, event: Any) -> None:
            if type(event) is _WebSocketBytes:
                await _send_websocket_bytes(self, event.data)
                return
            if not isinstance(event, (Closed, Updated)):
                await original(self, event)  # RawData: hypercorn shields the send itself
                return
            with trio.move_on_after(BOOKKEEPING_TIMEOUT_S) as scope:
                scope.shield = True
                # A cancelled aclose still closes the socket (trio's rule for aclose).
                await original(self, event)

        return protocol_send_shielded

    _patch(tcp_server.TCPServer, "protocol_send", wrap)


async def _send_websocket_bytes(server: Any, data: bytes) -> None:
    """What hypercorn's ``TCPServer.protocol_send`` does with ``RawData`` (under the connection's
    send lock, shielded, a broken connection reported as ``Closed``), without its rounds."""
    lock: trio.Lock = server.send_lock
    await socket_send.take_lock(lock)
    try:
        # hypercorn shields this send from cancellation: a write that does not wait needs no
        # scope for that (entering one costs about as much as the write).
        sent = socket_send.write_now(server.stream, data)
        if sent < len(data):
            with trio.CancelScope(shield=True):
                await server.stream.send_all(memoryview(data)[sent:])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await server.protocol.handle(Closed())
    finally:
        lock.release()


def _write_websocket_bytes_without_scheduling_rounds() -> None:
    def wrap(original: Any) -> Any:
        async def stream_send(self: Any, event: Any) -> None:
            # Data events are an upgraded WebSocket's frames; HTTP bodies are Body events.
            if isinstance(event, Data):
                await self.send(_WebSocketBytes(data=event.data))
            else:
                await original(self, event)

        return stream_send

    _patch(h11_protocol.H11Protocol, "stream_send", wrap)


_hypercorn_read_data = tcp_server.TCPServer._read_data


def _read_without_an_unbounded_timer() -> None:
    async def read_data(self: Any) -> None:
        if self.config.read_timeout:
            # Through the module's name, not the closure's: the tests put a spy there.
            await _hypercorn_read_data(self)
            return
        # The same loop as hypercorn's, minus the infinite deadline (and with fix 7): the same
        # errors end it, and the protocol is told about the end of the stream the same way.
        while True:
            try:
                data = await socket_receive.receive_some(self.stream, tcp_server.MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            websocket = _upgraded_websocket(self.protocol) if data else None
            if websocket is not None:
                # Fix 7: what H11Protocol would do with these bytes, without its layers.
                await websocket.handle(Data(stream_id=h11_protocol.STREAM_ID, data=bytes(data)))
                continue
            await self.protocol.handle(RawData(bytes(data)))
            if not data:
                break
        await self.protocol.handle(Closed())

    _patch(tcp_server.TCPServer, "_read_data", lambda original: read_data)


def _upgraded_websocket(wrapper: Any) -> ws_stream.WSStream | None:
    """The WebSocket stream of an upgraded HTTP/1.1 connection, when H11Protocol would pass
    bytes straight to it: its connection is then the pass-through H11WSConnection, whose buffer
    is empty between reads (each read is handed on whole)."""
    protocol = wrapper.protocol
    if type(protocol) is not h11_protocol.H11Protocol:
        return None
    connection = protocol.connection
    if type(connection) is not h11_protocol.H11WSConnection or connection.buffer:
        return None
    stream = protocol.stream
    return stream if type(stream) is ws_stream.WSStream else None


def _hand_over_messages_without_a_scheduling_round() -> None:
    def wrap(original: Any) -> Any:
        async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
            put = await original(self, app, config, scope, send)
            queue = getattr(put, "__self__", None)
            if scope.get("type") != "websocket" or not isinstance(queue, trio.MemorySendChannel):
                return put  # only WebSocket messages are frequent enough to matter

            async def put_soon(message: Any) -> None:
                try:
                    queue.send_nowait(message)
                except trio.WouldBlock:
                    await queue.send(message)

            return put_soon

        return spawn_app

    _patch(task_group.TaskGroup, "spawn_app", wrap)


def _serve_frames_with_our_codec() -> None:
    def wrap_accept(original: Any) -> Any:
        def accept(self: Any, subprotocol: Any, additional_headers: Any) -> Any:
            self.extensions = None  # offered extensions are declined (see fix 5 above)
            status_code, headers, _ = original(self, subprotocol, additional_headers)
            return status_code, headers, ServerConnection(getattr(self, _MAX_MESSAGE_ATTR))

        return accept

    def wrap_stream_accept(original: Any) -> Any:
        async def stream_accept(self: Any, message: Any) -> None:
            # The handshake's accept (above) has no config of its own; hand it the limit.
            setattr(self.handshake, _MAX_MESSAGE_ATTR, self.config.websocket_max_message_size)
            await original(self, message)

        return stream_accept

    _patch(ws_stream.Handshake, "accept", wrap_accept)
    _patch(ws_stream.WSStream, "_accept", wrap_stream_accept)
