"""WS /v1/realtime through a real hypercorn socket: subprotocols, validation, session limit."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from tests.conftest import replace
from tests.trio_steps import yields_of
from unmute_trio.session.runner import run_conversation
from unmute_trio.settings import Settings, SettingsError
from unmute_trio.web.realtime import CLOSE_HANDSHAKE_TIMEOUT_S, AsgiRealtimeSocket

# The exact event the original frontend sends on connect (contract 3.4).
FRONTEND_SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "instructions": {"type": "smalltalk", "language": None},
        "voice": "unmute-prod-website/p329_022.wav",
        "allow_recording": True,
    },
}


# How long flood_until_closed's client sends without reading, like a browser tab busy with
# its microphone while the server's answer waits in the socket.
BUSY_READER_S = 0.3


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime"


async def receive_json(ws) -> dict:
    with trio.fail_after(2):
        return json.loads(await ws.get_message())


async def test_realtime_subprotocol_is_accepted(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        assert ws.subprotocol == "realtime"


async def test_no_subprotocol_offered_means_none_answered(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base)) as ws:
        assert ws.subprotocol is None
        await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        assert (await receive_json(ws))["type"] == "session.updated"


async def test_other_subprotocols_are_not_answered_with_realtime(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["something-else"]) as ws:
        assert ws.subprotocol is None


async def test_session_update_gets_session_updated(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        reply = await receive_json(ws)
    assert reply["type"] == "session.updated"
    assert reply["event_id"].startswith("event_") and len(reply["event_id"]) == 27
    assert reply["session"] == FRONTEND_SESSION_UPDATE["session"]


@pytest.mark.parametrize(
    ("frame", "expected_in_message"),
    [
        ('{"type": "nope"}', "validation error"),
        ("not json", "Invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "session.update", "session": {"voice": "x"}}', "validation error"),
        ('{"type": "input_audio_buffer.append"}', "validation error"),
        (
            '{"type": "session.update", "session": {"allow_recording": true, '
            '"instructions": {"type": "karaoke"}}}',
            "validation error",
        ),
    ],
)
async def test_invalid_frames_get_invalid_request_error_and_session_continues(
    serve, all_down_settings, frame: str, expected_in_message: str
) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        await ws.send_message(frame)
        error = await receive_json(ws)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert expected_in_message in error["error"]["message"]
        # The session is still alive and answering.
        await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        assert (await receive_json(ws))["type"] == "session.updated"


async def test_validation_details_name_the_problem(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        await ws.send_message('{"type": "session.update", "session": {}}')
        error = await receive_json(ws)
    [detail] = error["error"]["details"]
    assert detail["loc"][-1] == "allow_recording"
    assert detail["type"] == "missing"


async def test_binary_frames_are_rejected_with_an_error(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
        await ws.send_message(b"\x00\x01")
        error = await receive_json(ws)
    assert error["error"]["type"] == "invalid_request_error"
    assert "Binary" in error["error"]["message"]


async def test_session_beyond_the_limit_is_refused_at_once(serve, all_down_settings) -> None:
    base = await serve(replace(all_down_settings, max_sessions=2))
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as first:
        async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as second:
            # Both are live sessions.
            for ws in (first, second):
                await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
                assert (await receive_json(ws))["type"] == "session.updated"
            async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as third:
                error = await receive_json(third)
                assert error["type"] == "error"
                assert error["error"]["type"] == "fatal"
                assert "limit of 2" in error["error"]["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    with trio.fail_after(2):
                        await third.get_message()
                assert closed.value.reason.code == 1013
    # Once sessions end, a new one is admitted again.
    with trio.fail_after(2):
        while True:
            async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
                await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
                if (await receive_json(ws))["type"] == "session.updated":
                    break
            await trio.sleep(0.05)


async def test_oversized_frame_closes_with_1009_and_ends_the_session(
    serve, all_down_settings, served_states
) -> None:
    base = await serve(all_down_settings)
    big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (2 * 1024 * 1024)})
    with trio.fail_after(5):
        async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send_message(big)
                await ws.get_message()
    assert closed.value.reason.code == 1009
    # hypercorn alone would leave this session running forever (see web/hypercorn_fixes.py).
    with trio.fail_after(2):
        while served_states[0].active_sessions:
            await trio.sleep(0.01)


async def test_api_keys_guard_both_protocols(serve, all_down_settings: Settings) -> None:
    """UNMUTE_API_KEYS: no key or a wrong one → HTTP 401 before the upgrade; each of the three
    ways to present a right key opens the connection, in either protocol."""
    settings = dataclasses.replace(all_down_settings, api_keys=("k-one", "k-two"))
    base = await serve(settings)
    url = ws_url(base)
    for rejected in (
        {"url": url},
        {"url": url, "subprotocols": ["realtime"]},
        {"url": url + "?model=m", "extra_headers": [(b"authorization", b"Bearer k-three")]},
        {"url": url + "?api_key=k-on"},
    ):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(**rejected):  # type: ignore[arg-type]
                pass
        assert refused.value.status_code == 401, rejected
        assert b"API key" in (refused.value.body or b"")
    # The OpenAI SDK's form, a browser's (the key subprotocol next to "realtime"), the query.
    # (These tests serve the protocol-only session: an accepted client gets session.updated.)
    accepted = (
        {"url": url + "?model=m", "extra_headers": [(b"authorization", b"Bearer k-two")]},
        {"url": url + "?model=m", "subprotocols": ["realtime", "openai-insecure-api-key.k-one"]},
        {"url": url + "?api_key=k-one", "subprotocols": ["realtime"]},
    )
    for allowed in accepted:
        async with open_websocket_url(**allowed) as ws:  # type: ignore[arg-type]
            await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
            assert (await receive_json(ws))["type"] == "session.updated", allowed
    # The built-in page: the Unmute dialect with the key subprotocol; "realtime" is chosen.
    page = ["realtime", "openai-insecure-api-key.k-two"]
    async with open_websocket_url(url, subprotocols=page) as ws:
        assert ws.subprotocol == "realtime"
        await ws.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        assert (await receive_json(ws))["type"] == "session.updated"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/v1/health")).json()["api_key_required"] is True


def test_api_keys_setting() -> None:
    env = {"UNMUTE_API_KEYS": " a1, b2 ,,"}
    assert Settings.from_env(env).api_keys == ("a1", "b2")
    assert Settings.from_env({}).api_keys == ()
    with pytest.raises(SettingsError):
        Settings.from_env({"UNMUTE_API_KEYS": "has space"})


async def test_refused_client_that_keeps_sending_gets_a_clean_close(
    serve, all_down_settings
) -> None:
    """A browser sends microphone audio from the moment the socket opens. When the server
    refuses it (full), the server must read until the client's close frame instead of closing
    TCP with audio unread: the kernel would then reset the connection, and a browser whose
    write meets the reset reports 1006 instead of the refusal (issue 15, item 9). Raw wsproto
    over TCP, because trio-websocket hides a reset that follows a close frame."""
    base = await serve(replace(all_down_settings, max_sessions=1))
    port = int(base.rsplit(":", 1)[1])
    audio = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 6000})
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as first:
        await first.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        assert (await receive_json(first))["type"] == "session.updated"
        for _ in range(5):
            with trio.fail_after(5):
                outcome = await flood_until_closed(port, audio)
            assert outcome == (1013, "server full", "fatal", "clean end of stream")


async def test_session_closed_by_the_server_while_the_client_sends_ends_cleanly(
    serve, all_down_settings
) -> None:
    """The same for a session the server ends itself: the real session runner, which fails
    the session (fatal, 1011) because the speech-to-text service cannot be reached."""
    base = await serve(all_down_settings, session_runner=run_conversation)
    port = int(base.rsplit(":", 1)[1])
    audio = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 6000})
    with trio.fail_after(5):
        code, _, error, ending = await flood_until_closed(port, audio)
    assert (code, error, ending) == (1011, "fatal", "clean end of stream")


async def flood_until_closed(port: int, message: str) -> tuple[int, str, str, str]:
    """Open a websocket and send ``message`` as fast as TCP takes it. Like a busy browser tab,
    read nothing for :data:`BUSY_READER_S` after the upgrade; then read, stop sending at the
    server's close frame, answer it and read to the end. Returns the close code and reason,
    the last event's error type, and how the connection ended."""
    ws = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        ws.send(Request(host=f"127.0.0.1:{port}", target="/v1/realtime", subprotocols=["realtime"]))
    )
    events: list[object] = []
    while not any(isinstance(e, AcceptConnection) for e in events):
        ws.receive_data(await stream.receive_some(65536))
        events.extend(ws.events())
    closed = trio.Event()
    ending = "clean end of stream"
    send_lock = trio.Lock()

    async def flood() -> None:
        nonlocal ending
        try:
            while not closed.is_set():
                async with send_lock:
                    # The server's close may have come with the upgrade's answer, in the same
                    # read: wsproto then refuses to send, as a browser stops sending.
                    if closed.is_set() or ws.state is not ConnectionState.OPEN:
                        break
                    await stream.send_all(ws.send(Message(data=message)))
        except trio.BrokenResourceError as e:
            ending = f"sending failed: {e.__cause__!r}"
            closed.set()

    texts: list[str] = []
    close: CloseConnection | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.sleep(BUSY_READER_S)
        try:
            while not closed.is_set() or close is not None:
                for event in events:
                    if isinstance(event, TextMessage):
                        texts.append(event.data)
                    elif isinstance(event, CloseConnection):
                        close = event
                        closed.set()
                        async with send_lock:
                            await stream.send_all(ws.send(event.response()))
                events = []
                data = await stream.receive_some(65536)
                if not data:
                    break
                ws.receive_data(data)
                events = list(ws.events())
        except trio.BrokenResourceError as e:
            ending = f"reading failed: {e.__cause__!r}"
        closed.set()
    await stream.aclose()
    assert close is not None, (texts, ending)
    last_error = json.loads(texts[-1])["error"]["type"] if texts else ""
    return close.code, close.reason, last_error, ending


async def test_a_client_that_never_answers_the_close_is_dropped(serve, all_down_settings) -> None:
    """The wait for the client's close frame is bounded (CLOSE_HANDSHAKE_TIMEOUT_S)."""
    base = await serve(replace(all_down_settings, max_sessions=1))
    port = int(base.rsplit(":", 1)[1])
    async with open_websocket_url(ws_url(base), subprotocols=["realtime"]) as first:
        await first.send_message(json.dumps(FRONTEND_SESSION_UPDATE))
        assert (await receive_json(first))["type"] == "session.updated"
        ws = WSConnection(ConnectionType.CLIENT)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            ws.send(
                Request(host=f"127.0.0.1:{port}", target="/v1/realtime", subprotocols=["realtime"])
            )
        )
        events = []
        with trio.fail_after(CLOSE_HANDSHAKE_TIMEOUT_S + 3):
            while data := await stream.receive_some(65536):
                ws.receive_data(data)
                events.extend(ws.events())  # and never a close frame back
        await stream.aclose()
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1013


@pytest.mark.parametrize("hypercorns_queue", [True, False])
async def test_the_socket_reads_hypercorns_queue_without_a_scheduling_round(
    hypercorns_queue: bool,
) -> None:
    """hypercorn hands the app its queue's bound ``receive``: a waiting message is taken at
    once. Any other receive callable is awaited as it is."""
    send, queue = trio.open_memory_channel[Any](4)

    async def other_receive() -> Any:
        return await queue.receive()

    receive = queue.receive if hypercorns_queue else other_receive
    socket = AsgiRealtimeSocket(receive, send.send, {}, {}, trio.CancelScope())
    send.send_nowait({"type": "websocket.receive", "text": "one"})
    send.send_nowait({"type": "websocket.receive", "bytes": b"two"})
    received: list[str | bytes] = []

    async def first() -> None:
        received.append(await socket.receive())

    assert await yields_of(first) == (0 if hypercorns_queue else 1)
    assert received == ["one"]
    assert await socket.receive() == b"two"
