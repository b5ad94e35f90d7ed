"""The server end of a client's WebSocket, for hypercorn, on ``services.ws_frames``.

hypercorn reads and writes WebSocket frames through a ``wsproto.Connection``. Each browser
session sends ~25 messages a second and receives ~50; wsproto spent ~21 µs to read a 330-byte
text message and ~3.6 µs to write one, this ~7 µs and ~1 µs (docs/benchmarks.md); reading was a
large part of hypercorn's share of the server's CPU. :class:`ServerConnection` offers what
hypercorn's ``WSStream`` uses of wsproto's connection (``receive_data``, ``events``, ``send``,
``state``), with the same events and the same state changes, on our own frame codec.
``web/hypercorn_fixes.py`` (fix 5) puts it in place once the handshake is accepted.

It has no extensions: the handshake declines permessage-deflate (see fix 5 for why).

Where it differs from wsproto, on purpose:
- A message is handed over whole, never frame by frame (hypercorn joins them anyway, and the
  size limit is checked from each frame's header before its payload is kept).
- A client that breaks the protocol (an unmasked frame, bad UTF-8, a frame over the size limit)
  gets a close frame with the code that says why (1002, 1007, 1009), as RFC 6455 §7.1.7 asks,
  and the stream ends. wsproto reported the first two to hypercorn without a close frame (only an
  oversized message got hypercorn's 1009).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from unmute_trio.services.ws_frames import (
    ABNORMAL_CLOSURE,
    BINARY,
    CLOSE,
    INVALID_DATA,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    close_payload,
    is_sendable_code,
    parse_close,
    server_frame,
)

MAX_CLOSE_REASON_BYTES = 123  # a control frame's 125 bytes, less the code


class ServerConnection:
    def __init__(self, max_message_bytes: int) -> None:
        self._reader = FrameReader(max_message_bytes, masked=True)
        self._state = ConnectionState.OPEN
        self._events: deque[Event] = deque()

    @property
    def state(self) -> ConnectionState:
        return self._state

    def receive_data(self, data: bytes | None) -> None:
        if data is None:  # the transport ended without a close frame
            self._events.append(CloseConnection(code=ABNORMAL_CLOSURE))
            self._state = ConnectionState.CLOSED
            return
        if self._state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            self._reader.feed(data)
        elif self._state is ConnectionState.CLOSED:
            raise LocalProtocolError("Connection already closed.")
        # REMOTE_CLOSING: the client has closed; anything after its close frame is dropped.

    def events(self) -> Iterator[Event]:
        while self._events:
            yield self._events.popleft()
        while self._state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            try:
                frame = self._reader.next()
                if frame is None:
                    return
                event = self._event(*frame)
            except FrameError as e:
                # Answered like a close from the client: hypercorn sends our close frame,
                # with this code, and ends the stream; if ours went out already, it just ends.
                self._state = (
                    ConnectionState.CLOSED
                    if self._state is ConnectionState.LOCAL_CLOSING
                    else ConnectionState.REMOTE_CLOSING
                )
                yield CloseConnection(code=e.code, reason=str(e))
                return
            yield event

    def _event(self, opcode: int, payload: bytes) -> Event:
        if opcode == TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise FrameError("a text message that is not UTF-8", INVALID_DATA) from None
            return TextMessage(data=text)
        if opcode == BINARY:
            return BytesMessage(data=payload)
        if opcode == PING:
            return Ping(payload=payload)
        if opcode == PONG:
            return Pong(payload=payload)
        assert opcode == CLOSE
        code, reason = parse_close(payload)
        if self._state is ConnectionState.LOCAL_CLOSING:
            self._state = ConnectionState.CLOSED
        else:
            self._state = ConnectionState.REMOTE_CLOSING
        return CloseConnection(code=code, reason=reason or "")

    def send(self, event: Event) -> bytes:
        # Every message goes out as one final frame: hypercorn 0.18 sends only whole messages.
        state = self._state
        if state is ConnectionState.OPEN:
            if isinstance(event, TextMessage):
                return server_frame(TEXT, event.data.encode())
            if isinstance(event, Message):
                return server_frame(BINARY, bytes(event.data))
            if isinstance(event, Ping):
                return server_frame(PING, bytes(event.payload))
            if isinstance(event, Pong):
                return server_frame(PONG, bytes(event.payload))
        if isinstance(event, CloseConnection) and state in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            self._state = (
                ConnectionState.CLOSED
                if state is ConnectionState.REMOTE_CLOSING
                else ConnectionState.LOCAL_CLOSING
            )
            if not is_sendable_code(event.code):  # 1005, 1006, 1015...: never on the wire
                return server_frame(CLOSE, b"")
            reason = (event.reason or "").encode()[:MAX_CLOSE_REASON_BYTES]
            return server_frame(CLOSE, close_payload(event.code) + _whole_utf8(reason))
        raise LocalProtocolError(f"Event {event} cannot be sent in state {state}.")


def _whole_utf8(data: bytes) -> bytes:
    """``data`` without a character cut in two at its end (after a truncation)."""
    return data.decode(errors="ignore").encode()
