"""WebSocket frames written out by hand, as RFC 6455 §5.2 lays them out: what the tests of our
frame codec and of the STT/TTS client send, independent of the code they test."""

from __future__ import annotations


def server_frame(
    opcode: int, payload: bytes, *, fin: bool = True, first: int | None = None
) -> bytes:
    """A frame as a server sends it (unmasked); ``first`` overrides the first byte."""
    b0 = first if first is not None else (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([b0, n]) + payload
    if n < 65536:
        return bytes([b0, 126]) + n.to_bytes(2, "big") + payload
    return bytes([b0, 127]) + n.to_bytes(8, "big") + payload
