"""Idle clients on /v1/realtime give their session slot back (issue 15, item 4).

A client that upgrades and then sends nothing used to keep its session (and its slot under
``UNMUTE_MAX_SESSIONS``) for minutes. Now, on trio's clock (virtual here): an Unmute-dialect
client that sends no ``session.update`` within ``UNMUTE_FIRST_EVENT_TIMEOUT_S`` (15 s), an
OpenAI-dialect client that sends no event at all within it, and any client that then sends
nothing for ``UNMUTE_CLIENT_IDLE_TIMEOUT_S`` (120 s) while no reply runs, gets a ``fatal`` error
and close 1008 with a reason that says which. Real sessions (the simulators' stack), real
sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.session_helpers import (
    SMALLTALK,
    greet,
    say,
    stream_forever_silence,
    wait_service_connections_closed,
    wait_while_silent,
)
from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.settings import Settings, SettingsError
from unmute_trio.testing.harness import Stack, conversation_stack
from unmute_trio.testing.speech import silence
from unmute_trio.testing.tts_sim import TtsSimConfig
from unmute_trio.testing.voice_client import VoiceClient


def openai_client(stack: Stack) -> Any:
    return VoiceClient.connect(stack.realtime_url + "?model=sim-model", subprotocols=())


async def wait_closed_at(client: VoiceClient) -> float:
    await client.wait_closed()
    return trio.current_time()


def assert_closed_for_silence(client: VoiceClient, reason: str, code: str) -> None:
    assert client.close_code == CloseCode.POLICY_VIOLATION == 1008
    assert client.close_reason == reason
    last = client.events[-1]
    assert last["type"] == "error", client.types()
    assert last["error"]["code"] == code
    assert last["error"]["type"] in ("fatal", "server_error")  # Unmute / OpenAI dialect


async def wait_no_sessions(stack: Stack) -> None:
    with trio.fail_after(5):
        while stack.state.active_sessions:
            await trio.sleep(0.01)


# ---------------------------------------------------------------------- settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.first_event_timeout_s == 15.0
    assert s.client_idle_timeout_s == 120.0


def test_values_are_read() -> None:
    s = Settings.from_env(
        {"UNMUTE_FIRST_EVENT_TIMEOUT_S": "5", "UNMUTE_CLIENT_IDLE_TIMEOUT_S": "600.5"}
    )
    assert s.first_event_timeout_s == 5.0
    assert s.client_idle_timeout_s == 600.5


@pytest.mark.parametrize(
    "variable", ["UNMUTE_FIRST_EVENT_TIMEOUT_S", "UNMUTE_CLIENT_IDLE_TIMEOUT_S"]
)
@pytest.mark.parametrize(
    ("value", "reason"),
    [("0", "positive"), ("-3", "positive"), ("inf", "finite"), ("soon", "not a number")],
)
def test_invalid_values_name_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({variable: value})
    assert e.value.variable == variable
    assert reason in e.value.reason


# ---------------------------------------------------------------------- Unmute dialect


async def test_an_unmute_client_without_session_update_is_closed_and_frees_its_slot(
    virtual_clock,
) -> None:
    async with conversation_stack(max_sessions=1) as stack:
        started = trio.current_time()
        async with VoiceClient.connect(stack.realtime_url) as idle:
            with trio.fail_after(5):
                while stack.state.active_sessions != 1:
                    await trio.sleep(0.01)
            # It holds the only slot: the next client is refused...
            async with VoiceClient.connect(stack.realtime_url) as refused:
                assert await refused.wait_closed() == 1013
            with trio.fail_after(60):
                closed_at = await wait_closed_at(idle)
        assert 15.0 <= closed_at - started < 15.5
        assert_closed_for_silence(idle, "no session.update within 15 s", "first_event_timeout")
        assert idle.events[-1]["error"]["type"] == "fatal"
        assert "within 15 s" in idle.events[-1]["error"]["message"]
        await wait_service_connections_closed(stack)
        assert stack.state.active_sessions == 0
        # ...and once it is closed, a new client gets the slot.
        async with VoiceClient.connect(stack.realtime_url) as late:
            with trio.fail_after(60):
                await greet(late)
            assert not late.closed


async def test_audio_without_session_update_is_closed_at_the_first_event_timeout(
    virtual_clock,
) -> None:
    """Documented: in the Unmute dialect only session.update opens the conversation."""
    async with conversation_stack(first_event_timeout_s=3) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            started = trio.current_time()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_forever_silence, client)
                    closed_at = await wait_closed_at(client)
                    nursery.cancel_scope.cancel()
        assert 3.0 <= closed_at - started < 3.5
        assert_closed_for_silence(client, "no session.update within 3 s", "first_event_timeout")
        await wait_no_sessions(stack)


async def test_an_unmute_client_that_goes_silent_is_closed_after_the_idle_limit(
    virtual_clock,
) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(300):
                await greet(client)  # session.update, then audio until the greeting is played
                silent_from = trio.current_time()
                closed_at = await wait_closed_at(client)
        # The last audio page was sent just before silent_from.
        assert 119.5 <= closed_at - silent_from <= 120.5
        assert_closed_for_silence(client, "client idle for 120 s", "client_idle_timeout")
        await wait_service_connections_closed(stack)


async def test_a_browser_like_session_is_not_closed(virtual_clock) -> None:
    """session.update at once and audio all the time: far beyond both limits, still open."""
    async with conversation_stack(first_event_timeout_s=1, client_idle_timeout_s=2) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(120):
                await greet(client)
                await client.stream(silence(10.0))
                mark = len(client.events)
                await say(client, 1.5)
                await wait_while_silent(client, "response.audio.done", after=mark)
            assert not client.closed
            assert "error" not in client.types()


# ---------------------------------------------------------------------- OpenAI dialect


async def test_an_openai_client_that_sends_nothing_is_closed(virtual_clock) -> None:
    async with conversation_stack() as stack:
        started = trio.current_time()
        async with openai_client(stack) as client:
            with trio.fail_after(60):
                closed_at = await wait_closed_at(client)
        assert 15.0 <= closed_at - started < 15.5
        assert client.types() == ["session.created", "error"]
        assert_closed_for_silence(client, "no client event within 15 s", "first_event_timeout")
        assert client.events[-1]["error"]["type"] == "server_error"
        await wait_no_sessions(stack)


async def test_any_openai_event_opens_the_session_and_silence_then_closes_it(
    virtual_clock,
) -> None:
    """No session.update needed: one event (here a clear) is enough, then the idle limit."""
    async with conversation_stack() as stack:
        async with openai_client(stack) as client:
            with trio.fail_after(600):
                await client.wait_for("session.created")
                await client.send({"type": "input_audio_buffer.clear"})
                await client.wait_for("input_audio_buffer.cleared")
                silent_from = trio.current_time()
                closed_at = await wait_closed_at(client)
        assert 120.0 <= closed_at - silent_from < 120.5
        assert_closed_for_silence(client, "client idle for 120 s", "client_idle_timeout")
        await wait_no_sessions(stack)


async def test_an_openai_client_that_keeps_sending_is_not_closed(virtual_clock) -> None:
    """An SDK client that sends an event now and then (here every 100 s, audio never) stays."""
    async with conversation_stack() as stack:
        async with openai_client(stack) as client:
            with trio.fail_after(900):
                await client.wait_for("session.created")
                session = {"type": "realtime", "output_modalities": ["text"]}
                await client.send({"type": "session.update", "session": session})
                for _ in range(5):
                    await trio.sleep(100)
                    assert not client.closed
                    await client.send({"type": "input_audio_buffer.clear"})
                await trio.sleep(100)
                assert not client.closed
                # It still converses.
                item = {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Still there?"}],
                }
                await client.send({"type": "conversation.item.create", "item": item})
                await client.send({"type": "response.create"})
                done = await client.wait_for("response.done")
            assert done["response"]["status"] == "completed"
            assert not client.closed
            assert "error" not in client.types()


async def test_a_reply_being_spoken_is_not_client_silence(virtual_clock) -> None:
    """A text client that asks for a long spoken reply and waits: the idle limit counts from
    the reply's end, not from the client's last event."""
    tts = TtsSimConfig(seconds_per_word=0.8)  # a reply of many seconds
    async with conversation_stack(tts=tts, client_idle_timeout_s=2) as stack:
        async with openai_client(stack) as client:
            with trio.fail_after(120):
                await client.wait_for("session.created")
                item = {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Tell me something."}],
                }
                await client.send({"type": "conversation.item.create", "item": item})
                await client.send({"type": "response.create"})
                asked_at = trio.current_time()
                done = await client.wait_for("response.done")
                done_at = trio.current_time()
                closed_at = await wait_closed_at(client)
        assert done["response"]["status"] == "completed"
        assert done_at - asked_at > 4  # the reply outlasted the idle limit twice over
        assert 2.0 <= closed_at - done_at < 2.5
        assert_closed_for_silence(client, "client idle for 2 s", "client_idle_timeout")
        await wait_no_sessions(stack)


# ---------------------------------------------------------------------- alongside


async def test_a_healthy_session_alongside_is_unaffected(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as healthy:
            with trio.fail_after(300):
                await healthy.update_session(SMALLTALK)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_forever_silence, healthy)
                    await healthy.wait_for("response.audio.done")  # the greeting
                    async with (
                        VoiceClient.connect(stack.realtime_url) as idle_unmute,
                        openai_client(stack) as idle_openai,
                    ):
                        await idle_unmute.wait_closed()
                        await idle_openai.wait_closed()
                    assert stack.state.active_sessions == 1
                    nursery.cancel_scope.cancel()
                # The healthy session goes on: a whole turn after the others were closed.
                mark = len(healthy.events)
                await say(healthy, 1.5)
                await wait_while_silent(healthy, "response.audio.done", after=mark)
            assert idle_unmute.close_reason == "no session.update within 15 s"
            assert idle_openai.close_reason == "no client event within 15 s"
            assert not healthy.closed
            assert "error" not in healthy.types()
            assert healthy.types().count("response.audio.done") >= 2  # (silence gets replies too)
