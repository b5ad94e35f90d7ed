"""Reading from a TCP stream that is usually idle, with one system call per message, not two.

trio's ``SocketStream.receive_some`` first tries ``recv``, and only when that fails with EAGAIN
waits for epoll to say the socket is readable, then calls ``recv`` again. That first try pays
for streams that are usually busy. Ours are usually idle when read: a browser sends a message
every 40 ms, the STT a Step every 80 ms, and the reader has dealt with the last one long before
the next arrives. So each message cost a failed ``recv`` (a system call and a Python exception)
on top of the one that reads it, 40 to 50 times a second per session on the paths below.
:func:`receive_some` waits first and reads once.

Used by hypercorn's read loop (``web/hypercorn_fixes.py``, fix 3), which reads every browser,
and by the STT and TTS sockets (``services/moshi_ws.py``).

The contract is ``receive_some``'s: at most ``max_bytes`` bytes, ``b""`` at the end of the
stream, always a checkpoint (the wait is one, even when bytes are already there), trio's errors
(``ClosedResourceError`` when the stream was closed, also by another task while waiting;
``BrokenResourceError`` for a reset or another failure of the connection;
``BusyResourceError`` when another task is reading). Streams other than a plain
``trio.SocketStream`` (TLS) take their own ``receive_some``.
"""

from __future__ import annotations

import errno
import os

import trio

# trio's own: the errors of a socket that was closed under the reader, not of the connection.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``: wait until the socket is readable, then read once."""
    if type(stream) is not trio.SocketStream:
        return await stream.receive_some(max_bytes)
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    while True:
        fd = stream.socket.fileno()
        if fd == -1:
            raise trio.ClosedResourceError("the stream was closed")
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            continue  # readable was reported, then nothing to read: wait again
        except OSError as e:
            if e.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError("the stream was closed") from None
            raise trio.BrokenResourceError(f"the connection failed: {e}") from e
