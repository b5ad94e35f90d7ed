"""Memory-channel hops that yield to the scheduler only when they have to wait.

trio's ``await channel.send(x)`` and ``await channel.receive()`` always pass through the
scheduler once, even when they complete at once (trio's rule that every ``await`` of its own is
a checkpoint). On the per-frame paths of a session (microphone pages to the STT sender, TTS
messages to the pacer, items to the client writer) that is one extra scheduling round per
message, ~100 a second per session, for nothing: each of these loops also awaits a socket on
every message or two, which checkpoints anyway, and a queue holds at most its bound, so a loop
that finds items waiting cannot run more than that many rounds without yielding.

These helpers take the fast path when it is there and fall back to trio's own method, with its
checkpoint, when they must wait. Use them only in loops that checkpoint elsewhere.
"""

from __future__ import annotations

from typing import TypeVar

import trio

T = TypeVar("T")


async def send(channel: trio.MemorySendChannel[T], value: T) -> None:
    """``channel.send(value)``, without the scheduling round when there is room."""
    try:
        channel.send_nowait(value)
    except trio.WouldBlock:
        await channel.send(value)


async def receive(channel: trio.MemoryReceiveChannel[T]) -> T:
    """``channel.receive()``, without the scheduling round when an item is waiting.

    Raises ``trio.EndOfChannel`` once the channel is closed and empty, like ``receive``.
    """
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        return await channel.receive()
