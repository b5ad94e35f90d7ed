"""The local engines with their real models, over real sockets, through the server's own
service clients (the production code path): spoken words in → the right words out; text in →
speech that the local STT transcribes back; and a whole spoken conversation through
``/v1/realtime``.

Real time, not virtual: the models run in worker threads. Every wait is bounded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trio

from tests.local_engines import (
    HEARD_LETTER_ERRORS,
    espeak,
    letter_error_rate,
    local_stt_engine,
    local_tts_engine,
    normalise_words,
    resample,
    stt_models,
    word_errors,
)
from tests.session_helpers import SMALLTALK, stream_forever_silence
from unmute_trio.protocol.moshi import Audio, EndWord, Step, TextOut, Word
from unmute_trio.services.stt import connect_stt
from unmute_trio.services.tts import connect_tts
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.speech import silence
from unmute_trio.testing.voice_client import VoiceClient

QUESTION = "What is the capital of France?"


async def transcribe_stream(url: str, pcm: np.ndarray) -> list[Word | EndWord | Step]:
    """Send ``pcm`` through the production STT client, then silence until the 2 s pause head
    says the user has stopped; every message received, in order."""
    received: list[Word | EndWord | Step] = []
    async with connect_stt(url, handshake_timeout_s=10) as stt:

        async def send() -> None:
            for i in range(0, len(pcm), 1920):
                await stt.send_audio(pcm[i : i + 1920])
                await trio.sleep(0.02)  # 4x real time: decodes overlap the audio as in use
            while True:
                await stt.send_audio(silence(0.08))
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            spoken_frames = len(pcm) // 1920
            while True:
                message = await stt.receive()
                received.append(message)  # type: ignore[arg-type]
                steps = sum(isinstance(m, Step) for m in received)
                if isinstance(message, Step) and steps > spoken_frames and message.prs[2] > 0.6:
                    break
            nursery.cancel_scope.cancel()
    return received


async def test_local_stt_transcribes_a_spoken_sentence(nursery: trio.Nursery) -> None:
    engine = local_stt_engine()
    port = await nursery.start(engine.serve)
    speech = espeak(QUESTION)
    pcm = np.concatenate([silence(0.5), speech])
    with trio.fail_after(60):
        received = await transcribe_stream(f"ws://127.0.0.1:{port}", pcm)
    words = [m.text for m in received if isinstance(m, Word)]
    assert word_errors(QUESTION, " ".join(words)) <= 1, words
    # Every word arrived before the Step that ended the user's turn, each with its EndWord,
    # with times inside the spoken audio.
    starts = [m.start_time for m in received if isinstance(m, Word)]
    stops = [m.stop_time for m in received if isinstance(m, EndWord)]
    assert len(stops) == len(starts) and starts == sorted(starts)
    spoken_end = len(pcm) / 24_000
    assert 0.3 <= starts[0] and stops[-1] <= spoken_end + 0.3
    steps = [m for m in received if isinstance(m, Step)]
    assert [s.step_idx for s in steps] == list(range(len(steps)))
    voiced = [s.prs[2] for s in steps if 0.8 <= (s.step_idx + 1) * 0.08 <= spoken_end - 0.2]
    assert voiced and max(voiced) < 0.4  # low while the user speaks


async def test_local_tts_speaks_words_the_local_stt_understands(nursery: trio.Nursery) -> None:
    engine = local_tts_engine()
    port = await nursery.start(engine.serve)
    text = "Paris is the capital of France. It is a beautiful city."
    messages: list[Audio | TextOut] = []
    with trio.fail_after(60):
        async with connect_tts(f"ws://127.0.0.1:{port}", handshake_timeout_s=10) as tts:
            for word in text.split():
                await tts.send_text(word + " ")
            await tts.send_eos()
            while (message := await tts.receive()) is not None:
                messages.append(message)
    texts = [m for m in messages if isinstance(m, TextOut)]
    assert [t.text for t in texts] == text.split()
    audio = np.concatenate([m.pcm for m in messages if isinstance(m, Audio)])
    assert all(len(m.pcm) == 1920 for m in messages if isinstance(m, Audio))
    duration = len(audio) / 24_000
    assert 2.0 < duration < 8.0
    assert texts[-1].stop_s <= duration + 1e-6
    # Text runs ahead of audio: each word's Text comes before the frame with its first sample.
    frames_before = 0
    for message in messages:
        if isinstance(message, Audio):
            frames_before += 1
        else:
            assert frames_before * 0.08 <= message.start_s + 1e-6
    recognizer, _ = stt_models()
    heard = recognizer.transcribe(resample(audio, 24_000, 16_000))
    assert letter_error_rate(text, heard) <= HEARD_LETTER_ERRORS, heard


async def test_local_tts_speaks_the_first_words_of_a_long_clause_before_it_ends(
    nursery: trio.Nursery,
) -> None:
    # A reply's first chunk is cut after ``first_chunk_words``; later chunks wait for a clause
    # (or ``max_chunk_words``). The stall timer is out of the way, so only those rules act.
    engine = local_tts_engine(first_chunk_words=4, max_chunk_words=20, stall_s=30.0)
    port = await nursery.start(engine.serve)
    words = "The moon is approximately four hundred thousand kilometers away from us".split()
    with trio.fail_after(60):
        async with connect_tts(f"ws://127.0.0.1:{port}", handshake_timeout_s=10) as tts:
            for word in words:
                await tts.send_text(word + " ")
            heard: list[str] = []
            while len(heard) < 4:  # before Eos: the first four words only
                message = await tts.receive()
                if isinstance(message, TextOut):
                    heard.append(message.text)
            assert heard == words[:4]
            with trio.move_on_after(1.0):  # the rest is not a clause yet: it waits
                while True:
                    message = await tts.receive()
                    assert not isinstance(message, TextOut), message
            await tts.send_eos()
            while (message := await tts.receive()) is not None:
                if isinstance(message, TextOut):
                    heard.append(message.text)
    assert heard == words


async def test_spoken_conversation_through_the_server_with_local_engines() -> None:
    """The browser protocol end to end: a spoken question in, the user's words shown, a reply
    spoken by Piper that the local STT transcribes back to the reply's text."""
    stt, tts = local_stt_engine(), local_tts_engine()
    question = espeak(QUESTION)
    with trio.fail_after(120):
        async with (
            conversation_stack(stt_server=stt, tts_server=tts) as stack,
            VoiceClient.connect(stack.realtime_url, keep_audio=True) as client,
        ):
            await client.update_session(SMALLTALK)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_forever_silence, client)
                await client.wait_for("response.audio.done")  # the greeting
                nursery.cancel_scope.cancel()
            asked_at = len(client.events)
            await client.stream(question)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_forever_silence, client)
                done = await client.wait_for("response.audio.done", after=asked_at)
                nursery.cancel_scope.cancel()
            done_at = client.events.index(done)
    # Piper's audio came as Opus (encoded by the engine) and was passed on without decoding.
    assert {r.format for r in tts.connections_log} == {"OggOpusMessagePack"}
    user = client.transcript("user")
    assert word_errors(QUESTION, user) <= 1, user
    reply_text = _reply_text(client.events[asked_at:done_at])
    assert normalise_words(reply_text)[:2] == ["you", "said"], reply_text
    assert "france" in normalise_words(reply_text), reply_text
    recognizer, _ = stt_models()
    heard = recognizer.transcribe(
        resample(client.bot_audio_between(asked_at, done_at), 24_000, 16_000)
    )
    assert letter_error_rate(reply_text, heard) <= HEARD_LETTER_ERRORS, (reply_text, heard)


def _reply_text(events: list[dict[str, Any]]) -> str:
    deltas = [e["delta"] for e in events if e.get("type") == "response.text.delta"]
    return " ".join(d.strip() for d in deltas if d.strip())
