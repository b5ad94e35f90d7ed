"""Whole conversations through a real hypercorn socket, with Ogg/Opus audio both ways, against
the protocol-exact simulators, on virtual time (see ``virtual_clock``)."""

from __future__ import annotations

import base64
import struct

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.session_helpers import (
    SMALLTALK,
    closed_while_silent,
    greet,
    say,
    stream_forever_silence,
    wait_service_connections_closed,
    wait_while_silent,
)
from unmute_trio.protocol.ogg_opus import split_pages
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimConfig
from unmute_trio.testing.speech import silence
from unmute_trio.testing.stt_sim import DEFAULT_STT_SCRIPT
from unmute_trio.testing.tts_sim import TtsSimConfig
from unmute_trio.testing.voice_client import VoiceClient

TURN_EVENTS = (
    "response.created",
    "unmute.response.text.delta.ready",
    "response.audio.delta",
    "response.text.delta",
    "response.text.done",
    "response.audio.done",
)


def first_index(types: list[str], name: str, start: int = 0) -> int:
    return types.index(name, start)


async def test_greeting_is_spoken_after_session_update(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client)
            types = client.types()
            assert types[0] == "session.updated"
            for name in TURN_EVENTS:
                assert name in types, name
            # Order of the turn: created, then words and audio, audio.done last.
            assert types.index("response.created") < types.index("response.audio.delta")
            assert types.index("response.audio.done") > max(
                i for i, t in enumerate(types) if t == "response.audio.delta"
            )
            assert client.bot_samples_heard > 24000  # more than a second of real audio
            assert client.bot_peak > 0.05
            created = client.of_type("response.created")[0]["response"]
            assert created["status"] == "in_progress"
            # The LLM was asked for a greeting: system prompt + a synthetic user hello.
            [request] = [r for r in stack.llm.requests if r.path == "/v1/chat/completions"]
            messages = request.body["messages"]
            assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
            assert request.body["temperature"] == 0.7
            spoken = client.transcript("assistant")
            planned = client.of_type("response.text.done")[0]["text"]
            assert spoken and spoken.split()[0] in planned
        await wait_service_connections_closed(stack)


@pytest.mark.parametrize(
    ("tts_audio", "tts_format"), [("opus", "OggOpusMessagePack"), ("pcm", "PcmMessagePack")]
)
async def test_bot_audio_arrives_whole_in_either_tts_format(
    virtual_clock, tts_audio: str, tts_format: str
) -> None:
    """UNMUTE_TTS_AUDIO: Opus packets passed on, or PCM encoded here; the client's one Ogg
    stream decodes (sphn) to every sample the TTS sent, across two replies."""
    async with conversation_stack(tts_audio=tts_audio) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(120):
                await greet(client)
                mark = len(client.events)
                await say(client, 1.5, seed=0)
                await wait_while_silent(client, "response.audio.done", after=mark)
        records = list(stack.tts.connections_log)
        assert [r.format for r in records] == [tts_format] * 2
        assert client.bot_samples_heard == sum(r.frames_sent for r in records) * 1920
        assert client.bot_peak > 0.05
        await wait_service_connections_closed(stack)
    # What the original frontend's decoder (opus-recorder's decoderWorker) relies on: each
    # delta is whole pages (it keeps nothing between messages), page sequence numbers 0 and 1
    # are the headers (it skips those), BOS only on the first page, one serial, no EOS.
    pages = [
        page
        for delta in client.of_type("response.audio.delta")
        for page in split_pages(base64.b64decode(delta["delta"]))
    ]
    fields = [struct.unpack_from("<BqII", page, 5) for page in pages]
    assert [sequence for _, _, _, sequence in fields] == list(range(len(pages)))
    assert [flags for flags, _, _, _ in fields] == [2] + [0] * (len(pages) - 1)
    assert len({serial for _, _, serial, _ in fields}) == 1
    assert pages[0][28:36] == b"OpusHead" and pages[1][28:36] == b"OpusTags"


async def test_two_full_turns(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(120):
                await greet(client)
                for turn in range(2):
                    mark = len(client.events)
                    await say(client, 1.5, seed=turn)
                    await wait_while_silent(client, "response.audio.done", after=mark)
                    types = client.types()[mark:]
                    # pause → flush → answer
                    started = first_index(types, "input_audio_buffer.speech_started")
                    stopped = first_index(types, "input_audio_buffer.speech_stopped")
                    created = first_index(types, "response.created")
                    assert started < stopped < created
                    said = " ".join(
                        e["delta"]
                        for e in client.events[mark:]
                        if e["type"] == "conversation.item.input_audio_transcription.delta"
                    )
                    assert said.split() == DEFAULT_STT_SCRIPT[turn].split()
            chat_requests = [r for r in stack.llm.requests if r.path == "/v1/chat/completions"]
            assert len(chat_requests) == 3
            last = chat_requests[-1].body
            assert last["temperature"] == 0.3
            users = [m["content"] for m in last["messages"] if m["role"] == "user"]
            assert users[-2:] == [DEFAULT_STT_SCRIPT[0], DEFAULT_STT_SCRIPT[1]]
            history = client.of_type("unmute.additional_outputs")[-1]["args"]["chat_history"]
            roles = [m["role"] for m in history]
            assert roles == ["assistant", "user", "assistant", "user", "assistant"]
        await wait_service_connections_closed(stack)


async def interrupted_turn_check(client: VoiceClient, interrupt_index: int) -> None:
    """Nothing of the interrupted turn after the interrupt event."""
    after = client.types()[interrupt_index + 1 :]
    next_created = after.index("response.created") if "response.created" in after else len(after)
    for name in ("response.audio.delta", "response.text.delta", "response.audio.done"):
        assert name not in after[:next_created], name


async def test_barge_in_by_word_in_the_first_seconds(virtual_clock) -> None:
    # A long, slow reply so the bot is still talking when the user starts.
    tts = TtsSimConfig(seconds_per_word=0.8)
    async with conversation_stack(tts=tts) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                await client.stream(silence(0.8))
                await client.wait_for("response.audio.delta")
                await say(client, 1.0)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_forever_silence, client)
                    await client.wait_for("unmute.interrupted_by_vad")
                    # The next turn's first LLM word: its request has reached the LLM.
                    await client.wait_for(
                        "unmute.response.text.delta.ready", after=len(client.events) - 1
                    )
                    nursery.cancel_scope.cancel()
            types = client.types()
            interrupt = types.index("unmute.interrupted_by_vad")
            # Within the first 3 s only a transcribed word can interrupt: the word came first.
            assert "conversation.item.input_audio_transcription.delta" in types[:interrupt]
            await interrupted_turn_check(client, interrupt)
            # The LLM context of the next turn holds only what was spoken, marked interrupted.
            last = [r for r in stack.llm.requests if r.path == "/v1/chat/completions"][-1]
            assistant = [m["content"] for m in last.body["messages"] if m["role"] == "assistant"]
            spoken = " ".join(
                e["delta"].strip()
                for e in client.events[:interrupt]
                if e["type"] == "response.text.delta"
            )
            planned = " ".join(
                e["delta"].strip()
                for e in client.events[:interrupt]
                if e["type"] == "unmute.response.text.delta.ready"
            )
            assert len(spoken.split()) < len(planned.split())
            assert assistant and assistant[0].endswith("—")
            assert assistant[0].rstrip(" —").split() == spoken.split()
        await wait_service_connections_closed(stack)


async def test_barge_in_by_vad_after_three_seconds(virtual_clock) -> None:
    tts = TtsSimConfig(seconds_per_word=0.8)
    async with conversation_stack(tts=tts) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                await client.stream(silence(4.0))
                assert "response.audio.done" not in client.types()  # still talking
                mark = len(client.events)
                await say(client, 1.0)
                await wait_while_silent(client, "unmute.interrupted_by_vad", after=mark)
            types = client.types()
            interrupt = types.index("unmute.interrupted_by_vad")
            # The voice activity interrupted before any word of it was transcribed.
            assert "conversation.item.input_audio_transcription.delta" not in types[mark:interrupt]
            await interrupted_turn_check(client, interrupt)
        await wait_service_connections_closed(stack)


async def test_long_silence_sends_the_silence_marker(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client)
                mark = len(client.events)
                await wait_while_silent(client, "unmute.response.text.delta.ready", after=mark)
            last = [r for r in stack.llm.requests if r.path == "/v1/chat/completions"][-1]
            assert last.body["messages"][-1] == {"role": "user", "content": "..."}
        await wait_service_connections_closed(stack)


async def test_goodbye_closes_the_session(virtual_clock) -> None:
    llm = LlmSimConfig(replies={"Hello!": "It was lovely to chat. Bye!"})
    async with conversation_stack(llm=llm) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                assert await closed_while_silent(client) == 1000
            assert "response.audio.done" in client.types()
            assert client.transcript("assistant").endswith("Bye!")
        await wait_service_connections_closed(stack)


async def test_llm_error_is_fatal_with_1011(virtual_clock) -> None:
    async with conversation_stack(llm=LlmSimConfig(fail_status=500)) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                assert await closed_while_silent(client) == 1011
            [error] = client.of_type("error")
            assert error["error"]["type"] == "fatal"
        await wait_service_connections_closed(stack)


async def test_stt_dying_mid_session_is_fatal(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream_forever_silence, client)
                    await stack.stt.kill_connections()
                    assert await client.wait_closed() == 1011
                    nursery.cancel_scope.cancel()
            assert client.of_type("error")[-1]["error"]["type"] == "fatal"
        await wait_service_connections_closed(stack)


async def test_stt_at_capacity_is_fatal_with_the_original_message(virtual_clock) -> None:
    from unmute_trio.testing.stt_sim import SttSimConfig

    async with conversation_stack(stt=SttSimConfig(capacity=0)) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                assert await client.wait_closed() == 1011
            message = client.of_type("error")[-1]["error"]["message"]
            assert message == (
                "Too many people are connected to service 'stt'. Please try again later."
            )
        await wait_service_connections_closed(stack)


async def test_tts_at_capacity_warns_then_recovers(virtual_clock) -> None:
    async with conversation_stack(tts=TtsSimConfig(capacity=1)) as stack:
        tts_url = stack.settings.tts_url + "/api/tts_streaming?format=PcmMessagePack"
        headers = [("kyutai-api-key", "public_token")]
        async with open_websocket_url(tts_url, extra_headers=headers) as hog:
            await hog.get_message()  # Ready: the only slot is taken
            async with VoiceClient.connect(stack.realtime_url) as client:
                with trio.fail_after(60):
                    await client.update_session(SMALLTALK)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(stream_forever_silence, client)
                        warning = await client.wait_for(
                            "error", lambda e: e["error"]["type"] == "warning"
                        )
                        await hog.aclose()  # the slot frees up
                        await client.wait_for("response.audio.done")
                        nursery.cancel_scope.cancel()
                assert warning["error"]["message"]
                assert not [e for e in client.of_type("error") if e["error"]["type"] == "fatal"]
        await wait_service_connections_closed(stack)


async def test_tts_at_capacity_for_good_is_fatal(virtual_clock) -> None:
    async with conversation_stack(tts=TtsSimConfig(capacity=0)) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                assert await closed_while_silent(client) == 1011
            errors = client.of_type("error")
            assert [e["error"]["type"] for e in errors] == ["warning"] * 4 + ["fatal"]
            assert errors[-1]["error"]["message"] == (
                "Too many people are connected to service 'tts'. Please try again later."
            )
        await wait_service_connections_closed(stack)


async def test_client_disconnect_mid_answer_closes_everything(virtual_clock) -> None:
    tts = TtsSimConfig(seconds_per_word=0.8)
    async with conversation_stack(tts=tts) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                await client.stream(silence(1.0))
                await client.wait_for("response.audio.delta")
                assert stack.tts.open_connections == 1
        await wait_service_connections_closed(stack)


async def test_voice_change_applies_to_the_next_turn(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client, voice="voice-a.wav")
                await client.send(
                    {
                        "type": "session.update",
                        "session": {
                            "instructions": None,
                            "voice": "voice-b.wav",
                            "allow_recording": False,
                        },
                    }
                )
                mark = len(client.events)
                await say(client, 1.5)
                await wait_while_silent(client, "response.audio.done", after=mark)
        voices = [c.voice for c in stack.tts.connections_log if c.words_spoken]
        assert voices == ["voice-a.wav", "voice-b.wav"]
        await wait_service_connections_closed(stack)


async def test_twenty_concurrent_sessions_all_complete(virtual_clock) -> None:
    from unmute_trio.testing.stt_sim import SttSimConfig

    async with conversation_stack(
        stt=SttSimConfig(capacity=32), tts=TtsSimConfig(capacity=32)
    ) as stack:
        done = []

        async def one(i: int) -> None:
            async with VoiceClient.connect(stack.realtime_url) as client:
                await greet(client)
                mark = len(client.events)
                await say(client, 1.5, seed=i)
                await wait_while_silent(client, "response.audio.done", after=mark)
                assert not client.of_type("error")
                done.append(i)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(one, i)
        assert sorted(done) == list(range(20))
        await wait_service_connections_closed(stack)


async def test_invalid_events_in_a_real_session(virtual_clock) -> None:
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(30):
                await client.ws.send_message('{"type": "nope"}')
                await client.send({"type": "input_audio_buffer.append", "audio": "%%%"})
                await client.send({"type": "input_audio_buffer.append", "audio": "AAAA"})
                errors = []
                while len(errors) < 2:
                    await trio.sleep(0.1)
                    errors = client.of_type("error")
                assert all(e["error"]["type"] == "invalid_request_error" for e in errors)
                # Still alive: a normal conversation proceeds.
                await greet(client)
        await wait_service_connections_closed(stack)
