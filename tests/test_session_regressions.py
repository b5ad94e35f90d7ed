"""Regressions found in review: each test failed before its fix."""

from __future__ import annotations

import contextlib

import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed

from tests.session_helpers import greet, wait_service_connections_closed
from unmute_trio.conversation.events import (
    AudioReceived,
    CancelTurn,
    SessionUpdated,
    StartTurn,
)
from unmute_trio.session.runner import Session
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.speech import silence
from unmute_trio.testing.voice_client import VoiceClient


async def test_stt_death_under_an_audio_burst_is_reported_once_as_stt(virtual_clock) -> None:
    """The STT sender used to close the audio queue when the STT died; the next audio page
    then crashed the reader, and the client got a generic internal error instead."""

    async def burst(client: VoiceClient) -> None:
        with contextlib.suppress(ConnectionClosed):  # the server closes while we send
            while True:
                await client.stream(silence(0.4), realtime=False)

    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(burst, client)
                    await trio.lowlevel.checkpoint()
                    await stack.stt.kill_connections()
                    code = await client.wait_closed()
                    nursery.cancel_scope.cancel()
        fatal = [e["error"]["message"] for e in client.of_type("error")]
        assert code == 1011
        assert fatal == ["Service 'stt' is not working right now. Please try again later."]
        await wait_service_connections_closed(stack)


class SilentSocket:
    async def receive(self) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async def send(self, text: str) -> None:
        pass

    async def close(self, code: int, reason: str = "") -> None:
        pass


async def test_a_turn_cancelled_before_its_task_runs_never_starts(virtual_clock) -> None:
    """StartTurn and CancelTurn can be applied in one scheduler pass (a flush-ending Step and a
    word in one STT burst). The turn's cancel scope used to be created only when its task ran,
    so such a turn played its whole reply, unseen, holding a TTS slot."""
    async with conversation_stack() as stack:
        session = Session(SilentSocket(), stack.state)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            with trio.fail_after(10):
                while session._main_nursery is None:
                    await trio.sleep(0.01)
            messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}]
            session._apply(StartTurn(1, messages, temperature=0.7, voice=None))
            session._apply(CancelTurn(1, reason="barge-in"))
            with trio.fail_after(10):
                while session._running_turns.count:
                    assert stack.tts.open_connections == 0
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert [r for r in stack.llm.requests if r.path == "/v1/chat/completions"] == []
        assert len(stack.tts.connections_log) == 0


class RecordingSocket(SilentSocket):
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


async def test_no_reply_is_announced_while_the_server_drains(virtual_clock) -> None:
    """During a drain no new reply starts; its response.created used to be sent anyway, so the
    client saw a reply announced that never came."""
    async with conversation_stack() as stack:
        socket = RecordingSocket()
        session = Session(socket, stack.state)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            with trio.fail_after(10):
                while session._main_nursery is None:
                    await trio.sleep(0.01)
            stack.state.drain.begin("test")
            # The events that start the greeting, in the same scheduler pass as the drain.
            session.dispatch(SessionUpdated("a prompt", voice=None, allow_recording=False))
            session.dispatch(AudioReceived(1920))
            assert session._running_turns.count == 0
            with trio.fail_after(10):
                while socket.closed is None:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert socket.closed[0] == 1001
        assert not [t for t in socket.sent if '"response.created"' in t]
