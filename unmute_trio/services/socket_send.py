"""Writing to a TCP stream without trio's scheduling round when the kernel takes the bytes.

trio's ``SocketStream.send_all`` always passes through the scheduler once, even when the
kernel's send buffer takes every byte at once (trio's rule that each of its own ``await``\\ s is a
checkpoint). On the per-message paths (an audio frame to the STT, a delta to a browser, a Step
from a simulator) that round is the only wait of the send, and under load it is a long one: a
round is every other runnable task's turn. A simulator sending the eight Steps of a flush paid it
eight times in a row, ~90 ms each with 50 sessions on a busy core, and the session's reply
started that much later. :func:`send_all` writes at once and returns without yielding when
the kernel took everything, and falls back to ``send_all`` for what is left when it did not.

Rules for callers, as for ``session/hops.py``:

- Hold the stream's send lock: nothing else may write to the stream concurrently (a write here
  would interleave with a ``send_all`` of another task waiting for room).
- Use it only in loops that checkpoint elsewhere (every such loop also waits to receive).

Cancellation is still honoured: a cancelled caller gets ``trio.Cancelled`` before any byte is
written, as with ``send_all``. Errors are trio's: a closed stream raises
``trio.ClosedResourceError`` and a broken connection ``trio.BrokenResourceError`` (the failed
write is handed to ``send_all``, which raises them). Streams other than a plain
``trio.SocketStream`` (TLS) take ``send_all`` unchanged.
"""

from __future__ import annotations

import os

import trio


async def send_all(stream: trio.abc.SendStream, data: bytes | bytearray | memoryview) -> None:
    """``stream.send_all(data)``, without the scheduling round when the kernel takes it all."""
    if type(stream) is not trio.SocketStream or not data:
        await stream.send_all(data)
        return
    await trio.lowlevel.checkpoint_if_cancelled()
    sent = write_now(stream, data)
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])


def write_now(stream: trio.abc.SendStream, data: bytes | bytearray | memoryview) -> int:
    """Write what the kernel takes of ``data`` now, without waiting or checking for
    cancellation; returns how many bytes that was. 0 when it took nothing, when the write failed
    (the caller's ``send_all`` of the rest then raises trio's error for it) and for streams that
    are not a plain ``trio.SocketStream``. The caller holds the stream's send lock."""
    if type(stream) is not trio.SocketStream:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except OSError:
        # Would block, or closed (fileno -1), reset, broken pipe: left to send_all.
        return 0


async def take_lock(lock: trio.Lock) -> None:
    """``lock.acquire()``, without the scheduling round when the lock is free: the send lock
    that :func:`send_all` and :func:`write_now` want held, taken the same cheap way."""
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()
