"""RFC 6455 frames for the client end of a WebSocket, sans I/O (used by ``services.moshi_ws``).

Why not wsproto: every session receives ~25 messages a second from the STT and TTS and sends
~12 to the STT. wsproto turns each received frame into several Python objects through a
generator pipeline (14–18 µs a message on the capacity machine) and builds a masked 9.6 KB
frame in ~12 µs; this module does the same work in 1.6–2.6 µs and ~5 µs (docs/benchmarks.md).
It covers exactly what a client without extensions needs:

- :func:`client_frame` builds one masked, unfragmented frame (a client must mask, §5.3).
- :class:`FrameReader` takes bytes as they arrive and gives back whole messages and control
  frames, joining fragments and checking what a server may send: no reserved bits (we offer no
  extension), no mask (§5.1), control frames short and unfragmented (§5.5), continuations only
  inside a message (§5.4), and no message over a size limit, refused from the frame header
  before its payload is buffered.

The upgrade handshake is not here: ``moshi_ws`` does it with h11.
"""

from __future__ import annotations

import os

import numpy as np

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

_CONTROL = frozenset({CLOSE, PING, PONG})
MAX_CONTROL_PAYLOAD = 125
# No client or server we know fragments its messages at all; this bounds the work a peer can
# make us do per message with empty or tiny fragments.
MAX_FRAGMENTS = 1024
# Close codes an endpoint may put on the wire (§7.4.1; 1004-1006 and 1015 are reserved,
# 1016-2999 unassigned; 3000-4999 are for libraries and applications).
_SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
NO_STATUS = 1005  # the code reported for a close frame without a payload
ABNORMAL_CLOSURE = 1006  # the code reported for a connection that ended without a close frame
# Below this many bytes, XOR through one Python int beats numpy's call overhead (measured: 1.5
# against 3.4 µs at 330 bytes, even at ~1000, 21 against 3 µs at 9600).
_NUMPY_MASK_BYTES = 1024
# Consumed bytes are dropped from the front of the buffer only past this, so that a read
# holding several frames does not move the rest once per frame.
_COMPACT_BYTES = 65536


# Close codes for what went wrong (§7.4.1).
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009


class FrameError(Exception):
    """The peer broke RFC 6455 (or our size limit); the text says how, ``code`` is the close
    code that tells the peer."""

    def __init__(self, message: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def mask(payload: bytes | memoryview, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    n = len(payload)
    if n < _NUMPY_MASK_BYTES:
        keys = (key * (n // 4 + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
            n, "little"
        )
    key_array = np.frombuffer(key * ((n + 3) // 4), np.uint8, count=n)
    return np.bitwise_xor(np.frombuffer(payload, np.uint8), key_array).tobytes()


def client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final (unfragmented) masked frame. ``key`` is for tests; normally random (§5.3)."""
    if key is None:
        key = os.urandom(4)
    return _head(opcode, len(payload), 0x80) + key + mask(payload, key)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final (unfragmented) frame as a server sends it: not masked."""
    return _head(opcode, len(payload), 0) + payload


def _head(opcode: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, mask_bit | n))
    if n < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, mask_bit | 127)) + n.to_bytes(8, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def is_sendable_code(code: int) -> bool:
    """Whether a close frame may carry ``code`` (§7.4)."""
    return code in _SENDABLE_CODES or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int, str | None]:
    """The code and reason of a close frame's payload (``NO_STATUS`` when empty)."""
    if not payload:
        return NO_STATUS, None
    if len(payload) == 1:
        raise FrameError("a close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_sendable_code(code):
        raise FrameError(f"a close frame with the invalid code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError("a close reason that is not UTF-8", INVALID_DATA) from None
    return code, reason or None


class FrameReader:
    """Bytes in, ``(opcode, payload)`` out: whole TEXT/BINARY messages, and PING, PONG and
    CLOSE frames (a control frame may arrive between the fragments of a message).

    A client reads a server's frames, which must not be masked; a server (``masked=True``)
    reads a client's, which must be, and gets them unmasked."""

    def __init__(self, max_message_bytes: int, *, masked: bool = False) -> None:
        self._max = max_message_bytes
        self._masked = masked
        self._buf = bytearray()
        self._pos = 0  # where the next frame starts in _buf
        self._kind: int | None = None  # opcode of the message whose fragments are arriving
        # The fragments so far, in one buffer: a list of tiny fragments would cost far more
        # memory than the bytes they hold.
        self._message = bytearray()
        self._fragments = 0

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        """The next message or control frame, or None until more bytes are fed."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode in _CONTROL:
                return opcode, payload
            if fin and opcode != CONTINUATION:  # a message in one frame: the usual case
                return opcode, payload
            if opcode != CONTINUATION:
                self._kind = opcode
            self._message += payload
            self._fragments += 1
            if fin:
                kind = self._kind
                assert kind is not None  # a continuation outside a message was refused
                whole = bytes(self._message)
                self._message.clear()
                self._fragments = 0
                self._kind = None
                return kind, whole

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        n = b1 & 0x7F
        head = 2
        if n >= 126:  # the length follows in 2 bytes (126) or 8 (127)
            extra = 2 if n == 126 else 8
            head = 2 + extra
            if available < head:
                return None
            n = int.from_bytes(buf[pos + 2 : pos + head], "big")
            if n < (126 if extra == 2 else 65536):
                raise FrameError("a frame length not in its shortest form")  # §5.2
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        self._check_header(b0, b1, fin, opcode, n)
        if self._masked:
            head += 4
        end = pos + head + n
        if len(buf) < end:
            return None
        with memoryview(buf) as view:  # released before the buffer is resized below
            if self._masked:
                payload = mask(view[pos + head : end], bytes(view[pos + head - 4 : pos + head]))
            else:
                payload = bytes(view[pos + head : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end > _COMPACT_BYTES:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return fin, opcode, payload

    def _check_header(self, b0: int, b1: int, fin: bool, opcode: int, n: int) -> None:
        """Refuse a frame from its header alone, before its payload is waited for."""
        if b0 & 0x70:
            raise FrameError("a frame with reserved bits set, but no extension was agreed")
        if bool(b1 & 0x80) is not self._masked:
            raise FrameError(
                "an unmasked frame from the client"
                if self._masked
                else "a masked frame from the server"
            )
        if opcode >= 0x8:
            if opcode not in _CONTROL:
                raise FrameError(f"a frame with the unknown opcode {opcode:#x}")
            if not fin:
                raise FrameError("a fragmented control frame")
            if n > MAX_CONTROL_PAYLOAD:
                raise FrameError(f"a control frame of {n} bytes (at most 125)")
            return
        if opcode == CONTINUATION:
            if self._kind is None:
                raise FrameError("a continuation frame outside a message")
        elif opcode in (TEXT, BINARY):
            if self._kind is not None:
                raise FrameError("a new message before the previous one's last fragment")
        else:
            raise FrameError(f"a frame with the unknown opcode {opcode:#x}")
        if len(self._message) + n > self._max:
            raise FrameError(f"a message of more than {self._max} bytes", MESSAGE_TOO_BIG)
        if opcode == CONTINUATION and self._fragments >= MAX_FRAGMENTS:
            # Empty fragments would otherwise keep a message open forever at no cost.
            raise FrameError(f"a message in more than {MAX_FRAGMENTS} fragments", MESSAGE_TOO_BIG)
