"""services/socket_send.py: a send that skips trio's scheduling round only when the kernel took
every byte, over real loopback TCP; and hypercorn's WebSocket writes that use it (fix 6 of
web/hypercorn_fixes.py)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from hypercorn.events import Closed

from unmute_trio.services.socket_send import send_all, write_now
from unmute_trio.web import hypercorn_fixes


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        client = await trio.testing.open_stream_to_socket_listener(listeners[0])
        server = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    assert isinstance(client, trio.SocketStream)
    return client, server


async def other_task_turns(action: Callable[[], Awaitable[object]]) -> int:
    """How many times a task that is always ready to run got a turn during ``action``: zero
    when ``action`` never passed through the scheduler. (trio.testing.assert_no_checkpoints
    would also count the cancellation check, which is wanted.)"""
    turns = 0

    async def always_ready() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(always_ready)
        for _ in range(3):  # let it start
            await trio.lowlevel.checkpoint()
        before = turns
        await action()
        after = turns
        nursery.cancel_scope.cancel()
    return after - before


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(65536)
        assert chunk, "the stream ended early"
        data += chunk
    return bytes(data)


async def test_bytes_taken_at_once_are_sent_without_a_checkpoint() -> None:
    client, server = await tcp_pair()
    async with client, server:
        messages = [bytes([i]) * (100 + i) for i in range(20)]

        async def send_ours() -> None:
            for message in messages:
                await send_all(client, message)

        async def send_trios() -> None:
            for message in messages:
                await client.send_all(message)

        assert await other_task_turns(send_ours) == 0
        assert await other_task_turns(send_trios) >= len(messages) // 2  # the counter sees rounds
        expected = b"".join(messages) * 2
        assert await receive_exactly(server, len(expected)) == expected


async def test_what_the_kernel_does_not_take_waits_like_send_all() -> None:
    client, server = await tcp_pair()
    async with client, server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        payload = bytes(range(256)) * 8192  # 2 MiB: far more than the buffers hold
        received = bytearray()

        async def read_once_the_sender_waits() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the kernel's buffers are full
            while len(received) < len(payload):
                received.extend(await server.receive_some(65536))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_once_the_sender_waits)
            with trio.testing.assert_checkpoints():
                await send_all(client, payload)
        assert bytes(received) == payload


async def test_a_cancelled_caller_sends_nothing() -> None:
    client, server = await tcp_pair()
    async with client, server:
        with trio.CancelScope() as scope:
            scope.cancel()
            await send_all(client, b"never")
            pytest.fail("send_all went on in a cancelled scope")
        await send_all(client, b"after")
        assert await receive_exactly(server, 5) == b"after"


async def test_closed_and_broken_streams_raise_trios_errors() -> None:
    client, server = await tcp_pair()
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await send_all(client, b"x")
    client, server = await tcp_pair()
    async with client:
        await server.aclose()
        with pytest.raises(trio.BrokenResourceError):
            with trio.fail_after(5):
                while True:  # the first writes after the peer's close may still succeed
                    await send_all(client, b"x" * 1000)


async def test_other_streams_and_empty_data_take_send_all() -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    with trio.testing.assert_checkpoints():
        await send_all(sender, b"abc")
    assert await receiver.receive_some() == b"abc"
    client, server = await tcp_pair()
    async with client, server:
        with trio.testing.assert_checkpoints():
            await send_all(client, b"")


async def test_hypercorn_websocket_bytes_written_under_the_lock_without_rounds() -> None:
    client, server = await tcp_pair()
    handled: list[object] = []

    async def handle(event: object) -> None:
        handled.append(event)

    connection = SimpleNamespace(
        send_lock=trio.Lock(), stream=client, protocol=SimpleNamespace(handle=handle)
    )
    async with client, server:

        async def send_frames() -> None:
            for _ in range(20):
                await hypercorn_fixes._send_websocket_bytes(connection, b"frame")

        assert await other_task_turns(send_frames) == 0
        assert not connection.send_lock.locked()
        assert await receive_exactly(server, 100) == b"frame" * 20

        # While another task holds the lock, the write waits for it.
        async with trio.open_nursery() as nursery:
            await connection.send_lock.acquire()
            nursery.start_soon(hypercorn_fixes._send_websocket_bytes, connection, b"later")
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"first")
            connection.send_lock.release()
        assert await receive_exactly(server, 10) == b"firstlater"

        # A broken connection is reported to the protocol as Closed, as hypercorn does.
        await server.aclose()
        with trio.fail_after(5):
            while not handled:
                await hypercorn_fixes._send_websocket_bytes(connection, b"x" * 1000)
        assert isinstance(handled[0], Closed)
        assert not connection.send_lock.locked()


async def test_write_now_reports_what_the_kernel_took() -> None:
    sender, _ = trio.testing.memory_stream_pair()
    assert write_now(sender, b"abc") == 0  # not a socket: left to send_all
    client, server = await tcp_pair()
    async with server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        assert write_now(client, b"abc") == 3
        assert await receive_exactly(server, 3) == b"abc"
        big = b"x" * (8 * 1024 * 1024)
        taken = write_now(client, big)
        assert 0 < taken < len(big)  # a full buffer takes part, without waiting
        await client.aclose()
        assert write_now(client, b"abc") == 0  # closed: the error is send_all's to raise
