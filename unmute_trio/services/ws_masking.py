"""WebSocket masking with numpy instead of wsproto's pure Python, for the processes that still
use wsproto: the simulators and local engines (which unmask every session's 9.6 KB STT frames)
and the load generator (which masks every microphone frame). The server itself no longer uses
wsproto for frames (``services/ws_frames.py``).

RFC 6455 makes a client XOR every byte it sends with a 4-byte key, and the server undo it.
wsproto does it with four ``bytearray.translate`` passes, ~40 µs for 9.6 KB; numpy does it in a
few µs.

``apply()`` replaces ``wsproto.frame_protocol.XorMaskerSimple``, which wsproto looks up by name
each time it starts a frame; idempotent. Checked against wsproto 1.2 (``process`` takes a
chunk of a frame's payload and returns it masked as a ``bytearray``; the key rotates so that
the next chunk of the same frame carries on where this one ended).
"""

from __future__ import annotations

import numpy as np
from wsproto import frame_protocol

_ORIGINAL = frame_protocol.XorMaskerSimple


class NumpyXorMasker:
    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        n = len(data)
        out = bytearray(n)
        if n:
            key = np.frombuffer(self._key * ((n + 3) // 4), dtype=np.uint8, count=n)
            np.bitwise_xor(np.frombuffer(data, np.uint8), key, out=np.frombuffer(out, np.uint8))
            rotation = n % 4
            self._key = self._key[rotation:] + self._key[:rotation]
        return out


def apply() -> None:
    frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc, assignment]  # the patch
