"""web/ws_connection.py against wsproto: a wsproto client's frames give hypercorn the events and
states wsproto's own server connection gave; ours are read back by a wsproto client; protocol
errors get a close frame naming them. Then through hypercorn (fix 5): permessage-deflate is
declined and a session runs on our connection."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import pytest
import trio
from hypercorn.protocol import ws_stream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from unmute_trio.services import ws_frames
from unmute_trio.settings import Settings
from unmute_trio.testing.protocol_only import protocol_only_session
from unmute_trio.testing.server import serve_app
from unmute_trio.web.app import create_app
from unmute_trio.web.ws_connection import ServerConnection

LIMIT = 1 << 20


def described(events: list[Event], pending: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Events as comparable tuples; a message's pieces are joined and it is listed where its
    last piece came (wsproto hands over pieces as they arrive, ours whole messages).
    ``pending`` carries an unfinished message from one call to the next."""
    pending = [] if pending is None else pending
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, (TextMessage, BytesMessage)):
            pending.append(event.data)
            if event.message_finished:
                whole = "".join(pending) if isinstance(event, TextMessage) else b"".join(pending)
                out.append((type(event).__name__, whole))
                pending.clear()
        elif isinstance(event, (Ping, Pong)):
            out.append((type(event).__name__, bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            out.append(("Close", event.code, event.reason or ""))
    return out


def both_read(wire: bytes, step: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What wsproto's server connection and ours make of ``wire`` fed ``step`` bytes at a
    time, with the state after each chunk."""
    results = []
    for server in (Connection(ConnectionType.SERVER), ServerConnection(LIMIT)):
        seen: list[tuple[Any, ...]] = []
        pending: list[Any] = []
        for i in range(0, len(wire), step):
            server.receive_data(wire[i : i + step])
            seen.extend(described(list(server.events()), pending))
            seen.append(("state", server.state))
        # Collapse repeated states (wsproto emits partial frames at other moments than ours).
        results.append([x for j, x in enumerate(seen) if j == 0 or x != seen[j - 1]])
    return results[0], results[1]


@pytest.mark.parametrize("step", [1, 5, 100_000])
def test_a_clients_frames_give_the_events_and_states_wsproto_gave(step: int) -> None:
    client = Connection(ConnectionType.CLIENT)
    big = os.urandom(70_000)
    wire = b"".join(
        [
            client.send(TextMessage(data='{"type": "session.update"} é')),
            client.send(BytesMessage(data=big)),
            client.send(TextMessage(data="part one, ", message_finished=False)),
            client.send(Ping(payload=b"between")),
            client.send(TextMessage(data="part two")),
            client.send(Pong(payload=b"p")),
            client.send(CloseConnection(code=1000, reason="bye")),
        ]
    )
    theirs, ours = both_read(wire, step)
    assert ours == theirs
    assert [x for x in ours if x[0] != "state"] == [
        ("TextMessage", '{"type": "session.update"} é'),
        ("BytesMessage", big),
        ("Ping", b"between"),
        ("TextMessage", "part one, part two"),
        ("Pong", b"p"),
        ("Close", 1000, "bye"),
    ]
    assert ours[-1] == ("state", ConnectionState.REMOTE_CLOSING)


def test_what_we_send_is_read_by_a_wsproto_client_and_states_follow_wsproto() -> None:
    for first_close in ("server", "client"):
        ours, theirs = ServerConnection(LIMIT), Connection(ConnectionType.SERVER)
        client = Connection(ConnectionType.CLIENT)
        wire = b""
        for event in [
            TextMessage(data="héllo"),
            BytesMessage(data=b"\x00" * 300),
            Ping(payload=b"x"),
            Pong(payload=b"y"),
        ]:
            frame = ours.send(event)
            assert frame == theirs.send(event)  # server frames are not masked: same bytes
            wire += frame
        if first_close == "server":
            wire += ours.send(CloseConnection(code=1001, reason="going"))
            theirs.send(CloseConnection(code=1001, reason="going"))
            assert ours.state is theirs.state is ConnectionState.LOCAL_CLOSING
            with pytest.raises(LocalProtocolError):
                ours.send(TextMessage(data="too late"))
            echo = client.send(CloseConnection(code=1001))
        else:
            echo = client.send(CloseConnection(code=1000))
        for server in (ours, theirs):
            server.receive_data(echo)
            events = list(server.events())
            assert isinstance(events[-1], CloseConnection)
            if first_close == "client":
                server.send(events[-1].response())
        assert ours.state is theirs.state is ConnectionState.CLOSED
        client.receive_data(wire)
        assert described(list(client.events())) == [
            ("TextMessage", "héllo"),
            ("BytesMessage", b"\x00" * 300),
            ("Ping", b"x"),
            ("Pong", b"y"),
        ] + ([("Close", 1001, "going")] if first_close == "server" else [])
        with pytest.raises(LocalProtocolError):
            ours.receive_data(b"more")


@pytest.mark.parametrize(
    ("wire", "code", "why"),
    [
        (ws_frames.server_frame(ws_frames.TEXT, b"hi"), 1002, "an unmasked frame from the client"),
        (ws_frames.client_frame(ws_frames.TEXT, b"\xff\xfe"), 1007, "not UTF-8"),
        (ws_frames.client_frame(ws_frames.BINARY, bytes(101))[:4], 1009, "more than 100 bytes"),
        (ws_frames.client_frame(0x3, b""), 1002, "unknown opcode"),
    ],
)
def test_a_broken_client_gets_a_close_frame_that_names_the_problem(
    wire: bytes, code: int, why: str
) -> None:
    server = ServerConnection(100)
    server.receive_data(wire)
    (event,) = server.events()
    assert isinstance(event, CloseConnection) and event.code == code and why in event.reason
    assert server.state is ConnectionState.REMOTE_CLOSING  # hypercorn answers, then ends
    answer = server.send(event.response())
    assert answer[0] == 0x88 and int.from_bytes(answer[2:4], "big") == code
    assert server.state is ConnectionState.CLOSED


def test_a_protocol_error_after_our_close_ends_without_a_second_close() -> None:
    server = ServerConnection(LIMIT)
    server.send(CloseConnection(code=1000))
    server.receive_data(ws_frames.server_frame(ws_frames.TEXT, b"unmasked"))
    (event,) = server.events()
    assert isinstance(event, CloseConnection) and event.code == 1002
    # hypercorn answers only in REMOTE_CLOSING: our close already went out, so it just ends.
    assert server.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        server.send(event.response())


def test_close_codes_that_are_never_sent_go_out_as_an_empty_close() -> None:
    for code in (1005, 1006, 1015, 2000):
        assert ServerConnection(LIMIT).send(CloseConnection(code=code)) == b"\x88\x00"
    long_reason = "é" * 100  # 200 bytes: cut to 123, without half a character
    frame = ServerConnection(LIMIT).send(CloseConnection(code=1000, reason=long_reason))
    assert frame[1] == 2 + 122 and frame[4:].decode() == "é" * 61


# --------------------------------------------------------------------------- through hypercorn


async def test_deflate_is_declined_and_a_session_runs_on_our_connection(
    nursery: trio.Nursery, all_down_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    original = ws_stream.WSStream._accept

    async def spy(self: Any, message: Any) -> None:
        await original(self, message)
        made.append(self.connection)

    monkeypatch.setattr(ws_stream.WSStream, "_accept", spy)
    app = create_app(all_down_settings, session_runner=protocol_only_session)
    port = await nursery.start(functools.partial(serve_app, app))
    client = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        # What a browser offers.
        request = Request(
            host=f"127.0.0.1:{port}",
            target="/v1/realtime",
            subprotocols=["realtime"],
            extensions=[PerMessageDeflate()],
        )
        await stream.send_all(client.send(request))
        events: list[Event] = []
        with trio.fail_after(5):
            while not any(isinstance(e, AcceptConnection) for e in events):
                client.receive_data(await stream.receive_some())
                events.extend(client.events())
            accepted = next(e for e in events if isinstance(e, AcceptConnection))
            assert accepted.extensions == []  # declined: no Sec-WebSocket-Extensions answer
            update = {"type": "session.update", "session": {"allow_recording": False}}
            await stream.send_all(client.send(TextMessage(data=json.dumps(update))))
            texts: list[str] = []
            while not texts:
                client.receive_data(await stream.receive_some())
                texts.extend(e.data for e in client.events() if isinstance(e, TextMessage))
    assert json.loads(texts[0])["type"] == "session.updated"
    assert len(made) == 1 and isinstance(made[0], ServerConnection)
