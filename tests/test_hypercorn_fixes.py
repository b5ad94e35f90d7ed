"""hypercorn's read loop without its per-read timer (web/hypercorn_fixes.py, fix 3).

With ``read_timeout`` unset (our configuration), connections are read by the patched loop,
which must end a connection exactly as hypercorn's does; with it set, hypercorn's own loop,
timer included, still runs."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.protocol import h11 as h11_protocol
from hypercorn.trio import task_group, tcp_server
from trio_websocket import open_websocket_url

from tests.trio_steps import yields_of
from unmute_trio.services import socket_receive
from unmute_trio.settings import Settings
from unmute_trio.testing.protocol_only import protocol_only_session
from unmute_trio.testing.server import serve_app
from unmute_trio.web import hypercorn_fixes
from unmute_trio.web.app import create_app

PROMPT_S = 5.0


def test_the_patch_is_applied_once() -> None:
    hypercorn_fixes.apply()
    patched = tcp_server.TCPServer._read_data
    hypercorn_fixes.apply()
    assert tcp_server.TCPServer._read_data is patched
    assert getattr(patched, hypercorn_fixes._APPLIED_MARK)


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    answer = b""
    while data := await stream.receive_some():
        answer += data
    return answer


async def read_one_response(stream: trio.SocketStream) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some()
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += await stream.receive_some()
    return head


@pytest.mark.parametrize("read_timeout", [None, 30])
async def test_requests_are_answered_and_the_clients_eof_ends_the_connection(
    nursery: trio.Nursery,
    all_down_settings: Settings,
    read_timeout: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hypercorn_loops = []
    original = hypercorn_fixes._hypercorn_read_data

    async def spy(server: Any) -> None:
        hypercorn_loops.append(server)
        await original(server)

    monkeypatch.setattr(hypercorn_fixes, "_hypercorn_read_data", spy)
    our_reads = []
    receive_some = socket_receive.receive_some

    async def read_spy(stream: Any, max_bytes: int) -> bytes | bytearray:
        our_reads.append(max_bytes)
        return await receive_some(stream, max_bytes)

    monkeypatch.setattr(socket_receive, "receive_some", read_spy)
    app = create_app(all_down_settings, session_runner=protocol_only_session)
    port = await nursery.start(
        functools.partial(serve_app, app, keep_alive_timeout=60, read_timeout=read_timeout)
    )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with trio.fail_after(PROMPT_S):
            for _ in range(2):  # the loop goes on after the first request
                await stream.send_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await read_one_response(stream)
                assert head.startswith(b"HTTP/1.1 "), head
            await stream.send_eof()  # the loop must see the end of the stream and close
            assert await read_until_closed(stream) == b""
    # hypercorn's own loop (and its timer) runs only when a read timeout is configured.
    assert len(hypercorn_loops) == (0 if read_timeout is None else 1)
    # The patched loop reads once the socket is readable (services/socket_receive.py).
    assert bool(our_reads) == (read_timeout is None)


# --------------------------------------------------------------------------- fix 4


async def test_messages_reach_the_app_in_order_and_a_full_queue_still_waits() -> None:
    hypercorn_fixes.apply()
    config = Config()
    config.max_app_queue_size = 2
    received: list[object] = []
    release = trio.Event()

    async def app(scope: object, receive: Any, send: Any, *spawners: object) -> None:
        await release.wait()
        for _ in range(3):
            received.append(await receive())

    async def app_send(message: object) -> None:
        pass

    async def quiet_app(*args: object) -> None:
        pass

    async with task_group.TaskGroup() as group:
        spawn_app: Any = group.spawn_app  # the ASGI types are hypercorn's TypedDicts
        put = await spawn_app(app, config, {"type": "websocket"}, app_send)
        http_put = await spawn_app(quiet_app, config, {"type": "http"}, app_send)
        assert getattr(http_put, "__self__", None) is not None  # hypercorn's own, for HTTP
        assert await yields_of(lambda: put({"n": 1})) == 0  # room: no scheduling round
        await put({"n": 2})
        third_put = trio.Event()

        async def put_third() -> None:
            await put({"n": 3})  # the queue holds 2: the third waits for the app
            third_put.set()

        group.spawn(put_third)
        await trio.testing.wait_all_tasks_blocked()
        assert not third_put.is_set()
        release.set()
        await third_put.wait()
    assert received == [{"n": 1}, {"n": 2}, {"n": 3}]


# --------------------------------------------------------------------------- fix 7


async def test_websocket_bytes_go_straight_to_the_stream(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the upgrade, the read loop hands each read to the WebSocket stream itself: the
    HTTP/1.1 protocol sees the handshake's bytes and the end of the stream, not the messages,
    and the messages (and the close) arrive in order as before."""
    raw_reads: list[int] = []
    handle = h11_protocol.H11Protocol.handle

    async def spy(self: Any, event: Any) -> None:
        if isinstance(event, RawData):
            raw_reads.append(len(event.data))
        await handle(self, event)

    monkeypatch.setattr(h11_protocol.H11Protocol, "handle", spy)
    received: list[str] = []
    disconnected = trio.Event()

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["text"])
            await send({"type": "websocket.send", "text": message["text"].upper()})
        disconnected.set()

    port = await nursery.start(serve_app, echo)
    with trio.fail_after(PROMPT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            for i in range(20):
                await ws.send_message(f"message {i}")
                assert await ws.get_message() == f"MESSAGE {i}"
        await disconnected.wait()
    assert received == [f"message {i}" for i in range(20)]
    # The handshake request, then only the end of the stream (b"") if the client closed first.
    assert len(raw_reads) <= 2
    assert raw_reads[0] > 0 and all(n == 0 for n in raw_reads[1:])
