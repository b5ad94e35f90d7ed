"""services/socket_receive.py: a read that waits for the socket before reading, over real
loopback TCP, with receive_some's contract. hypercorn's read loop using it: see
test_hypercorn_fixes."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

from tests.test_socket_send import tcp_pair
from unmute_trio.services import socket_receive
from unmute_trio.services.socket_receive import receive_some


@pytest.fixture
def os_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes asked of every os.read the module makes (each one a system call)."""
    calls: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        calls.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(socket_receive.os, "read", counting_read)
    return calls


async def test_one_read_per_message_on_an_idle_stream(os_reads: list[int]) -> None:
    client, server = await tcp_pair()
    got: list[bytes] = []

    async def reader() -> None:
        while (data := await receive_some(server, 1000)) != b"":
            got.append(bytes(data))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i in range(10):
            await trio.testing.wait_all_tasks_blocked()  # the reader waits on an idle socket
            await client.send_all(b"message %d" % i)
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
    assert got == [b"message %d" % i for i in range(10)]
    # One read per message and one for the end of the stream: none that finds nothing.
    assert len(os_reads) == 11
    assert set(os_reads) == {1000}
    await server.aclose()


async def test_at_most_max_bytes_and_the_rest_on_the_next_read() -> None:
    client, server = await tcp_pair()
    await client.send_all(b"0123456789")
    assert await receive_some(server, 4) == b"0123"
    assert await receive_some(server, 100) == b"456789"
    with pytest.raises(ValueError):
        await receive_some(server, 0)
    await client.aclose()
    assert await receive_some(server, 100) == b""
    await server.aclose()


async def test_a_checkpoint_even_when_bytes_are_waiting() -> None:
    client, server = await tcp_pair()
    await client.send_all(b"ready")
    with trio.CancelScope() as scope:
        scope.cancel()
        await receive_some(server, 100)
    assert scope.cancelled_caught
    assert await receive_some(server, 100) == b"ready"  # nothing was taken by the cancelled read
    await client.aclose()
    await server.aclose()


async def test_cancelled_while_waiting_loses_nothing() -> None:
    client, server = await tcp_pair()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_some, server, 100)
            await trio.testing.wait_all_tasks_blocked()  # the read waits on the idle socket
            scope.cancel()
    assert scope.cancelled_caught
    await client.send_all(b"later")
    assert await receive_some(server, 100) == b"later"
    await client.aclose()
    await server.aclose()


async def test_closed_before_or_while_waiting() -> None:
    client, server = await tcp_pair()
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await receive_some(server, 100)

    client2, server2 = await tcp_pair()
    errors: list[BaseException] = []

    async def read() -> None:
        try:
            await receive_some(server2, 100)
        except trio.ClosedResourceError as e:
            errors.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await server2.aclose()
    assert len(errors) == 1
    await client.aclose()
    await client2.aclose()


async def test_a_reset_connection_is_broken() -> None:
    client, server = await tcp_pair()
    # Closing with SO_LINGER 0 sends a RST instead of a FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await receive_some(server, 100)
    await server.aclose()


async def test_a_second_reader_is_refused() -> None:
    client, server = await tcp_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_some, server, 100)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await receive_some(server, 100)
        await client.send_all(b"x")
    await client.aclose()
    await server.aclose()


async def test_other_streams_read_their_own_way(os_reads: list[int]) -> None:
    send, receive = trio.testing.memory_stream_pair()
    await send.send_all(b"in memory")
    assert await receive_some(receive, 100) == b"in memory"
    assert os_reads == []
