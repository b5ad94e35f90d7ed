"""session/hops.py: channel hops that skip trio's scheduling round when they need not wait."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.trio_steps import yields_of
from unmute_trio.session import hops


async def test_send_with_room_does_not_yield() -> None:
    send, receive = trio.open_memory_channel[int](2)
    assert await yields_of(lambda: send.send(1)) == 1  # trio's own: one scheduling round
    assert await yields_of(lambda: hops.send(send, 2)) == 0
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]


async def test_receive_of_a_waiting_item_does_not_yield() -> None:
    send, receive = trio.open_memory_channel[int](2)
    send.send_nowait(6)
    send.send_nowait(7)
    got: list[int] = []

    async def trio_receive() -> None:
        got.append(await receive.receive())

    async def hops_receive() -> None:
        got.append(await hops.receive(receive))

    assert await yields_of(trio_receive) == 1
    assert await yields_of(hops_receive) == 0
    assert got == [6, 7]


async def test_a_full_channel_waits_for_room(nursery: trio.Nursery) -> None:
    send, receive = trio.open_memory_channel[int](1)
    send.send_nowait(1)
    done = trio.Event()

    async def sender() -> None:
        await hops.send(send, 2)
        done.set()

    nursery.start_soon(sender)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    assert receive.receive_nowait() == 1
    with trio.fail_after(1):
        await done.wait()
    assert receive.receive_nowait() == 2


async def test_an_empty_channel_waits_then_ends(nursery: trio.Nursery) -> None:
    send, receive = trio.open_memory_channel[int](1)
    received: list[int] = []

    async def receiver() -> None:
        try:
            while True:
                received.append(await hops.receive(receive))
        except trio.EndOfChannel:
            received.append(-1)

    nursery.start_soon(receiver)
    await trio.testing.wait_all_tasks_blocked()
    assert received == []
    await send.send(3)
    await send.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert received == [3, -1]


async def test_waiting_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    send, receive = trio.open_memory_channel[int](0)
    with trio.move_on_after(0.01) as scope:
        await hops.receive(receive)
    assert scope.cancelled_caught
    with trio.move_on_after(0.01) as scope:
        await hops.send(send, 1)
    assert scope.cancelled_caught


async def test_closed_channels_raise_as_trio_does() -> None:
    send, receive = trio.open_memory_channel[int](1)
    await receive.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await hops.send(send, 1)
