"""The moshi-server handshake against servers that close the connection before it completes:
each must be reported at once as what it is, never as a handshake timeout."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio_websocket

from unmute_trio.errors import ServiceDisconnected, ServiceError, ServiceProtocolError
from unmute_trio.protocol import moshi
from unmute_trio.services.stt import connect_stt
from unmute_trio.services.tts import connect_tts

# Far longer than any answer below takes: a test that waits for it has failed.
HANDSHAKE_TIMEOUT_S = 5.0
PROMPT_S = 1.0

Connect = Callable[..., AbstractAsyncContextManager[Any]]
CLIENTS: list[Connect] = [connect_stt, connect_tts]


async def read_request(conn: trio.socket.SocketType) -> bytes:
    request = b""
    while b"\r\n\r\n" not in request:
        data = await conn.recv(4096)
        if not data:
            break
        request += data
    return request


def switching_protocols(request: bytes) -> bytes:
    key = re.search(rb"(?i)sec-websocket-key: *(\S+)", request)
    assert key is not None
    digest = hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + base64.b64encode(digest) + b"\r\n\r\n"
    )


async def close_at_once(conn: trio.socket.SocketType) -> None:
    """Accept the TCP connection, then close it without reading anything."""


async def close_after_request(conn: trio.socket.SocketType) -> None:
    await read_request(conn)


async def close_mid_answer(conn: trio.socket.SocketType) -> None:
    await read_request(conn)
    await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")


async def reset_after_request(conn: trio.socket.SocketType) -> None:
    await read_request(conn)
    # SO_LINGER 0: close() sends an RST instead of a FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


async def upgrade_then_close(conn: trio.socket.SocketType) -> None:
    """Accept the WebSocket, then drop TCP without a close frame and without Ready."""
    await conn.send(switching_protocols(await read_request(conn)))


async def upgrade_then_close_frame(conn: trio.socket.SocketType) -> None:
    """Accept the WebSocket, then close it in order (code 1000) without Ready."""
    await conn.send(switching_protocols(await read_request(conn)) + b"\x88\x02\x03\xe8")
    with trio.move_on_after(PROMPT_S):
        while await conn.recv(4096):  # the client's close frame, then EOF
            pass


async def refuse_with_a_body_until_close(conn: trio.socket.SocketType) -> None:
    """No Content-Length: the body of the refusal lasts until the connection closes."""
    await read_request(conn)
    await conn.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbusy")


Server = Callable[[trio.socket.SocketType], Awaitable[None]]


async def serve_once(
    server: Server, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        task_status.started(listener.getsockname()[1])
        conn, _ = await listener.accept()
        with conn:
            await server(conn)


async def handshake_error(nursery: trio.Nursery, server: Server, connect: Connect) -> ServiceError:
    port = await nursery.start(serve_once, server)
    started = trio.current_time()
    with pytest.raises(ServiceError) as info:
        async with connect(f"ws://127.0.0.1:{port}", handshake_timeout_s=HANDSHAKE_TIMEOUT_S):
            pytest.fail("the server never sends Ready")
    assert trio.current_time() - started < PROMPT_S, "reported after waiting, not at once"
    return info.value


@pytest.mark.parametrize("connect", CLIENTS, ids=["stt", "tts"])
@pytest.mark.parametrize(
    "server",
    [
        close_at_once,
        close_after_request,
        close_mid_answer,
        reset_after_request,
        upgrade_then_close,
        upgrade_then_close_frame,
    ],
)
async def test_a_close_before_ready_is_a_prompt_disconnect(
    nursery: trio.Nursery, server: Server, connect: Connect
) -> None:
    # Before the fix, the first four (a close before the upgrade's answer was complete) were
    # reported as ServiceTimeout once the whole handshake deadline had passed.
    error = await handshake_error(nursery, server, connect)
    assert isinstance(error, ServiceDisconnected), repr(error)
    assert error.service == ("stt" if connect is connect_stt else "tts")


@pytest.mark.parametrize("connect", CLIENTS, ids=["stt", "tts"])
async def test_a_refusal_whose_body_ends_with_the_connection_names_its_status(
    nursery: trio.Nursery, connect: Connect
) -> None:
    error = await handshake_error(nursery, refuse_with_a_body_until_close, connect)
    assert isinstance(error, ServiceProtocolError), repr(error)
    assert "HTTP 503" in error.detail


async def test_a_server_closing_after_ready_still_ends_the_stream_in_order(
    nursery: trio.Nursery,
) -> None:
    """Past the upgrade the watch steps aside: a close after Ready is the end of the stream,
    as before (moshi_ws.MoshiSocket.receive), not a failure of the upgrade."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(moshi.encode(moshi.Ready()))
        await ws.aclose()

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    with trio.fail_after(PROMPT_S):
        async with connect_stt(f"ws://127.0.0.1:{server.port}") as stt:
            with pytest.raises(ServiceDisconnected, match="the server closed the stream"):
                await stt.receive()
