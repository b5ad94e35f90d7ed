"""The moshi-server handshake against servers that close the connection before it completes:
each must be reported at once as what it is, never as a handshake timeout."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket

from tests.ws_wire import server_frame
from unmute_trio.errors import ServiceDisconnected, ServiceError, ServiceProtocolError
from unmute_trio.protocol import moshi
from unmute_trio.services import moshi_ws, ws_connect
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


# --------------------------------------------------------------------------- the stream itself
# The client reads and writes its frames itself (services/ws_frames): these servers write WebSocket
# frames byte by byte, as RFC 6455 lays them out, to check what a general library did for us.


class ClientFrames:
    """Reads the client's masked frames from a raw socket."""

    def __init__(self, conn: trio.socket.SocketType) -> None:
        self.conn = conn
        self.buffer = b""

    async def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.conn.recv(65536)
            if not data:
                raise EOFError
            self.buffer += data
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    async def next(self) -> tuple[int, bytes]:
        first, second = await self._take(2)
        assert second & 0x80, "a client frame must be masked"
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(await self._take(2), "big")
        elif n == 127:
            n = int.from_bytes(await self._take(8), "big")
        key = await self._take(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(await self._take(n)))
        return first & 0x0F, payload


READY = server_frame(0x2, moshi.encode(moshi.Ready()))
CLOSE_1000 = server_frame(0x8, (1000).to_bytes(2, "big"))


async def serve_frames(
    script: Callable[[trio.socket.SocketType, ClientFrames], Awaitable[None]],
    *,
    then_ready: bool = True,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept one connection, answer its upgrade and send Ready (unless ``then_ready`` is
    False: the script answers the upgrade itself), then run ``script`` on it."""

    async def server(conn: trio.socket.SocketType) -> None:
        if then_ready:
            await conn.send(switching_protocols(await read_request(conn)) + READY)
        await script(conn, ClientFrames(conn))

    await serve_once(server, task_status=task_status)


async def test_ready_sent_with_the_upgrade_answer_is_not_lost(nursery: trio.Nursery) -> None:
    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        # The 101, Ready and a Step in one segment: the client must keep what follows the head.
        step = server_frame(
            0x2, moshi.encode(moshi.Step(step_idx=0, prs=[0.1, 0.2, 0.3], buffered_pcm=0))
        )
        await conn.send(switching_protocols(await read_request(conn)) + READY + step)
        assert await frames.next() == (0x8, (1000).to_bytes(2, "big"))
        await conn.send(CLOSE_1000)

    port = await nursery.start(functools.partial(serve_frames, script, then_ready=False))
    with trio.fail_after(PROMPT_S):
        async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
            step = await stt.receive()
    assert isinstance(step, moshi.Step) and list(step.prs) == pytest.approx([0.1, 0.2, 0.3])


async def test_a_ping_is_answered_and_a_fragmented_message_reassembled(
    nursery: trio.Nursery,
) -> None:
    pong: list[tuple[int, bytes]] = []

    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        await conn.send(server_frame(0x9, b"are you there"))
        pong.append(await frames.next())
        # One Step message in three fragments, with a ping between two of them (RFC 6455 §5.4).
        data = moshi.encode(moshi.Step(step_idx=3, prs=[0.5, 0.25, 0.125], buffered_pcm=0))
        await conn.send(
            server_frame(0x2, data[:3], fin=False)
            + server_frame(0x0, data[3:7], fin=False)
            + server_frame(0x9, b"again")
            + server_frame(0x0, data[7:])
        )
        pong.append(await frames.next())
        assert await frames.next() == (0x8, (1000).to_bytes(2, "big"))
        await conn.send(CLOSE_1000)

    port = await nursery.start(serve_frames, script)
    with trio.fail_after(PROMPT_S):
        async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
            step = await stt.receive()
    assert isinstance(step, moshi.Step) and step.step_idx == 3
    assert pong == [(0xA, b"are you there"), (0xA, b"again")]


async def test_a_message_over_the_limit_is_a_protocol_error(nursery: trio.Nursery) -> None:
    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        chunk = bytes(256 * 1024)
        # Four fragments make exactly the limit; the byte after them is one too many. The
        # client drops the connection when it refuses, so a later send may meet a reset.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            data = memoryview(
                server_frame(0x2, chunk, fin=False)
                + b"".join(server_frame(0x0, chunk, fin=False) for _ in range(3))
                + server_frame(0x0, b"x")
            )
            while data:
                data = data[await conn.send(data) :]
            with trio.move_on_after(PROMPT_S):
                while await conn.recv(65536):
                    pass

    port = await nursery.start(serve_frames, script)
    with trio.fail_after(PROMPT_S), pytest.raises(ServiceProtocolError, match="more than"):
        async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
            await stt.receive()


@pytest.mark.parametrize(("code", "clean"), [(1000, True), (1001, True), (1011, False)])
async def test_a_close_frame_after_ready_ends_or_breaks_the_stream(
    nursery: trio.Nursery, code: int, clean: bool
) -> None:
    answered: list[tuple[int, bytes]] = []

    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        assert await frames.next() == (0x2, moshi.encode(moshi.Eos()))
        await conn.send(server_frame(0x8, code.to_bytes(2, "big") + b"bye"))
        answered.append(await frames.next())  # the client's half of the close handshake

    port = await nursery.start(serve_frames, script)
    with trio.fail_after(PROMPT_S):
        async with connect_tts(f"ws://127.0.0.1:{port}") as tts:
            await tts.send_eos()
            if clean:
                assert await tts.receive() is None
            else:
                with pytest.raises(ServiceDisconnected, match=f"code {code}, 'bye'"):
                    await tts.receive()
    assert answered and answered[0][0] == 0x8


async def test_a_normal_exit_waits_for_the_servers_close_only_so_long(
    nursery: trio.Nursery,
) -> None:
    """Our close frame goes out; a server that never answers it is dropped after the bound."""
    seen: list[tuple[int, bytes]] = []

    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        seen.append(await frames.next())
        with trio.move_on_after(PROMPT_S * 2):
            while await conn.recv(65536):  # never answer; wait for the TCP close
                pass
        seen.append((-1, b"eof"))

    port = await nursery.start(serve_frames, script)
    started = trio.current_time()
    with trio.fail_after(PROMPT_S * 2):
        async with connect_stt(f"ws://127.0.0.1:{port}"):
            pass
    waited = trio.current_time() - started
    assert moshi_ws.CLOSE_TIMEOUT_S * 0.9 <= waited < moshi_ws.CLOSE_TIMEOUT_S + 0.5
    with trio.fail_after(PROMPT_S):
        while len(seen) < 2:
            await trio.sleep(0.01)
    assert seen == [(0x8, (1000).to_bytes(2, "big")), (-1, b"eof")]


async def test_the_server_vanishing_mid_stream_is_a_disconnect_for_both_directions(
    nursery: trio.Nursery,
) -> None:
    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        # SO_LINGER 0: the close resets the connection.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    port = await nursery.start(serve_frames, script)
    with trio.fail_after(PROMPT_S):
        with pytest.raises(ServiceDisconnected, match="code 1006"):
            async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
                with pytest.raises(ServiceDisconnected, match="code 1006"):
                    await stt.receive()
                await stt.send_audio(np.zeros(moshi.SAMPLES_PER_FRAME, dtype=np.float32))


def answer_with(head: bytes) -> Server:
    """A server that answers the upgrade with ``head`` (a 101 that is wrong somehow)."""

    async def server(conn: trio.socket.SocketType) -> None:
        request = await read_request(conn)
        good = switching_protocols(request)
        accept = re.search(rb"Sec-WebSocket-Accept: (\S+)", good)
        assert accept is not None
        await conn.send(head.replace(b"{accept}", accept.group(1)) + b"\r\n" + READY)
        with trio.move_on_after(PROMPT_S):
            while await conn.recv(4096):
                pass

    return server


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: c29tZXRoaW5nIGVsc2UgZW50aXJlbHk=\r\n",
            "does not match our key",
        ),
        (
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
            "an extension we did not offer",
        ),
        (
            b"HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\n",
            "does not upgrade to websocket",
        ),
        (
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\n",
            "lacks 'Connection: Upgrade'",
        ),
        (
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\n",
            "a subprotocol we did not offer",
        ),
        (b"HTTP/1.1 nonsense\r\n", "WebSocket handshake failed"),
    ],
)
async def test_a_101_that_is_not_a_websocket_answer_is_refused_at_once(
    nursery: trio.Nursery, head: bytes, why: str
) -> None:
    error = await handshake_error(nursery, answer_with(head), connect_stt)
    assert isinstance(error, ServiceProtocolError), repr(error)
    assert why in error.detail


def test_the_accept_check_takes_a_correct_answer_in_any_case() -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example and its answer
    headers = [
        (b"upgrade", b"WebSocket"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    ws_connect.check_accept("stt", "ws://x", headers, key)  # no exception


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\x82\x81abcdx", "a masked frame from the server"),
        (server_frame(0x8, b"\x03"), "a close frame with a one-byte payload"),
        (server_frame(0x0, b"x"), "a continuation frame outside a message"),
    ],
)
async def test_a_broken_frame_after_ready_is_a_protocol_error(
    nursery: trio.Nursery, wire: bytes, why: str
) -> None:
    async def script(conn: trio.socket.SocketType, frames: ClientFrames) -> None:
        await conn.send(wire)
        with trio.move_on_after(PROMPT_S):
            while await conn.recv(4096):
                pass

    port = await nursery.start(serve_frames, script)
    with trio.fail_after(PROMPT_S), pytest.raises(ServiceProtocolError) as info:
        async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
            await stt.receive()
    assert info.value.detail == f"broken WebSocket stream: {why}"


async def test_informational_answers_before_the_101_are_skipped(nursery: trio.Nursery) -> None:
    async def server(conn: trio.socket.SocketType) -> None:
        answer = switching_protocols(await read_request(conn))
        early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        await conn.send(early + answer + READY)
        frames = ClientFrames(conn)
        assert await frames.next() == (0x8, (1000).to_bytes(2, "big"))
        await conn.send(CLOSE_1000)

    port = await nursery.start(serve_once, server)
    with trio.fail_after(PROMPT_S):
        async with connect_stt(f"ws://127.0.0.1:{port}") as stt:
            assert stt is not None


@pytest.mark.parametrize(
    "refusal",
    [
        b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 400\r\n\r\ncut short",
        b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n",  # no end
    ],
    ids=["whole body", "body cut short", "body that never ends"],
)
async def test_a_refusal_is_reported_at_its_status_line_whatever_its_body(
    nursery: trio.Nursery, refusal: bytes
) -> None:
    async def server(conn: trio.socket.SocketType) -> None:
        await read_request(conn)
        await conn.send(refusal)
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            while await conn.recv(4096):  # keep the connection open: the body may never end
                pass

    error = await handshake_error(nursery, server, connect_stt)
    assert isinstance(error, ServiceProtocolError), repr(error)
    assert "HTTP 503" in error.detail
