"""WS /v1/realtime through a real hypercorn socket: subprotocols, validation, session limit."""

from __future__ import annotations

import dataclasses
import json

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests.conftest import replace
from unmute_trio.settings import Settings, SettingsError

# The exact event the original frontend sends on connect (contract 3.4).
FRONTEND_SESSION_UPDATE = {
    "type": "session.update",
    "session": {
        "instructions": {"type": "smalltalk", "language": None},
        "voice": "unmute-prod-website/p329_022.wav",
        "allow_recording": True,
    },
}


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
