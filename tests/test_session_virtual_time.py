"""A whole OpenAI-protocol session on trio's virtual clock, through the session's seams: an
in-memory client socket, in-memory STT/TTS links (the simulators' models, wire bytes but no
sockets) and a scripted LLM. Nothing here waits for real time or a socket, so every event's
time is exact and the test asserts it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from unmute_trio.loadtest.microphone import OggStream, encode_microphone
from unmute_trio.protocol.g711 import float32_to_pcm16
from unmute_trio.services.llm import LLMClient
from unmute_trio.session.drain import Drain
from unmute_trio.session.front import ClientFront
from unmute_trio.session.openai_front import OpenAIFront
from unmute_trio.session.pacer import AUDIO_LEAD_S
from unmute_trio.session.runner import Session
from unmute_trio.session.stt_feed import STT_KEEPALIVE_S
from unmute_trio.session.unmute_front import UnmuteFront
from unmute_trio.settings import Settings
from unmute_trio.testing.in_memory import InMemoryLinks, ScriptedLlm
from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.voice_store import MemoryVoiceStore, VoiceStore
from unmute_trio.voices import VoiceSample

CHUNK_S = 0.04  # the client sends 40 ms of audio every 40 ms of (virtual) time
TTFT_S = 0.2


@dataclasses.dataclass
class Context:
    settings: Settings
    voices: list[VoiceSample]
    voice_store: VoiceStore
    llm: ScriptedLlm | LLMClient | None
    news: None = None
    drain: Drain = dataclasses.field(default_factory=Drain)


class MemorySocket:
    """The client's WebSocket: frames to the server through a channel, frames from it noted
    with the virtual time at which the session sent them."""

    def __init__(self) -> None:
        self.to_server, self._from_client = trio.open_memory_channel[str](16)
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed: tuple[int, str] | None = None
        self.got_event = trio.Event()
        # While set, every send waits for it to be cleared: a client that stops reading.
        self.unblocked: trio.Event | None = None

    async def receive(self) -> str | bytes:
        return await self._from_client.receive()

    async def send(self, text: str) -> None:
        called_at = trio.current_time()  # when the session sent it, even if it waits below
        if self.unblocked is not None:
            await self.unblocked.wait()
        self.sent.append((called_at, json.loads(text)))
        self.got_event.set()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def times(self, kind: str) -> list[float]:
        return [t for t, e in self.sent if e["type"] == kind]

    async def wait_for(self, kind: str) -> None:
        while not self.times(kind):
            self.got_event = trio.Event()
            await self.got_event.wait()


def make_session(
    llm: ScriptedLlm, front: Callable[[Context], ClientFront] | None = None
) -> tuple[Session, MemorySocket, InMemoryLinks]:
    """A session on in-memory links; its front is the OpenAI dialect's unless ``front``."""
    links = InMemoryLinks()
    ctx = Context(
        settings=Settings(),
        voices=[],
        voice_store=MemoryVoiceStore(ttl_s=60, max_entries=4, clock=trio.current_time),
        llm=llm,
    )
    socket = MemorySocket()
    client_front = OpenAIFront(ctx, {"model": "m"}) if front is None else front(ctx)
    return Session(socket, ctx, client_front, links), socket, links


async def speak(socket: MemorySocket, pcm: Any) -> None:
    """Append ``pcm`` in 40 ms chunks, one every 40 ms of (virtual) time."""
    step = int(24_000 * CHUNK_S)
    for i in range(0, len(pcm), step):
        audio = base64.b64encode(float32_to_pcm16(pcm[i : i + step])).decode()
        await socket.to_server.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": audio})
        )
        await trio.sleep(CHUNK_S)


async def configure(socket: MemorySocket) -> None:
    await socket.wait_for("session.created")
    update = {"type": "realtime", "audio": {"input": {"transcription": {"model": "any"}}}}
    await socket.to_server.send(json.dumps({"type": "session.update", "session": update}))
    await socket.wait_for("session.updated")


def assert_paced(audio: list[float], unit_s: float, units_per_word: int, word_gap_s: float) -> None:
    """Each audio delta (``unit_s`` of audio) left at the later of two moments: when the TTS
    made it (``units_per_word`` at once, a word every ``word_gap_s``) and when playback was
    within AUDIO_LEAD_S of it (the pacer)."""
    expected = [
        audio[0] + max((k // units_per_word) * word_gap_s, k * unit_s - AUDIO_LEAD_S)
        for k in range(len(audio))
    ]
    assert all(abs(a - b) < 1e-9 for a, b in zip(audio, expected, strict=True)), audio


async def test_a_spoken_turn_has_exact_times(autojump_clock: trio.testing.MockClock) -> None:
    llm = ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0)
    session, socket, links = make_session(llm)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await configure(socket)
        started = trio.current_time()
        await speak(socket, speech_like(1.6))
        spoken_until = trio.current_time()
        with trio.fail_after(30):
            async with trio.open_nursery() as talking:
                talking.start_soon(speak, socket, silence(10.0))
                await socket.wait_for("response.done")
                talking.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

    # No real time anywhere: the clock moved only by the client's own sleeps.
    assert started == 0.0 and abs(spoken_until - 1.6) < 1e-9
    [stopped] = socket.times("input_audio_buffer.speech_stopped")
    [created] = socket.times("response.created")
    # The STT flush (8 silent frames) is stepped at once in-process: the reply starts at the
    # very instant the pause was detected.
    assert created == stopped
    audio = socket.times("response.output_audio.delta")
    # The first audio leaves when the LLM's first word has been spoken by the TTS: TTFT later.
    assert audio[0] == created + TTFT_S
    # Every later 80 ms frame leaves at the later of two moments: when the TTS has made it
    # (the LLM writes a word every 0.05 s, the tone TTS makes 3 frames per word at once) and
    # when playback is within AUDIO_LEAD_S of it (the pacer).
    frame_s, word_gap_s, frames_per_word = 0.08, 1 / 20.0, 3
    assert_paced(audio, frame_s, frames_per_word, word_gap_s)
    assert len(audio) == frames_per_word * len(links.tts[0].words)
    # The response is done when playback reaches its last word (the transcript is then
    # complete), not when its audio was sent: the last word starts 12 words × 0.24 s in.
    [done] = socket.times("response.done")
    last_word_at = (len(links.tts[0].words) - 1) * frames_per_word * frame_s
    assert abs(done - (audio[0] + last_word_at)) < 1e-9, (done, audio[0])
    # What was said and answered, through the wire formats of both services.
    heard = next(e for _, e in socket.sent if e["type"].endswith("transcription.completed"))
    assert heard["transcript"] == "Hello, how are you today?"
    assert llm.requests[-1][-1] == {"role": "user", "content": "Hello, how are you today?"}
    assert (
        " ".join(links.tts[0].words)
        == "You said: Hello, how are you today. Tell me more. What happened next?"
    )


def response_audio(socket: MemorySocket, response_id: str) -> list[float]:
    """When the session sent each audio delta of one response."""
    return [
        t
        for t, e in socket.sent
        if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id
    ]


async def test_audio_queued_for_a_blocked_client_is_dropped_when_the_user_interrupts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ "Nothing of a cancelled turn reaches the client", also when the client stopped reading
    for a moment and the turn's audio waits in the writer's queue at the interruption."""
    session, socket, _ = make_session(ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0))
    results: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await configure(socket)
        await speak(socket, speech_like(1.6))
        with trio.fail_after(60):
            await _interrupt_while_blocked(socket, session, results)
        nursery.cancel_scope.cancel()
    response_id, blocked_at, cancelled_at = results
    _check_no_late_audio(socket, response_id, blocked_at, cancelled_at)


async def _interrupt_while_blocked(socket: MemorySocket, session: Session, out: list[Any]) -> None:
    """Let a reply play, stop reading for 1 s while it goes on, talk over it, then read again;
    ``out`` gets the reply's id, when reading stopped and when the reply was cancelled."""
    async with trio.open_nursery() as talking:
        talking.start_soon(speak, socket, silence(30.0))  # an open microphone
        await socket.wait_for("response.output_audio.delta")
        first = next(e for _, e in socket.sent if e["type"] == "response.created")
        response_id = first["response"]["id"]
        await trio.sleep(0.5)  # the reply is being played
        blocked_at = trio.current_time()
        socket.unblocked = trio.Event()  # the client stops reading: audio piles up
        await trio.sleep(1.0)
        talking.cancel_scope.cancel()
    assert session.machine.active_turn_id is not None  # still speaking, frames queued
    async with trio.open_nursery() as talking:
        talking.start_soon(speak, socket, speech_like(1.6, seed=2))  # the user talks over it
        while session.machine.active_turn_id is not None:
            await trio.sleep(0.04)
        cancelled_at = trio.current_time()
        await trio.sleep(0.5)
        unblocked, socket.unblocked = socket.unblocked, None
        unblocked.set()
        await socket.wait_for("response.done")
        talking.cancel_scope.cancel()
    out += [response_id, blocked_at, cancelled_at]


def _check_no_late_audio(
    socket: MemorySocket, response_id: str, blocked_at: float, cancelled_at: float
) -> None:
    [done] = [e for _, e in socket.sent if e["type"] == "response.done"]
    assert done["response"]["status"] == "cancelled"
    assert cancelled_at > blocked_at + 1.0
    # One frame was already on its way when the client stopped reading; everything the turn
    # queued after that was dropped at the interruption, not delivered late.
    late = [t for t in response_audio(socket, response_id) if t >= blocked_at]
    assert len(late) <= 1, late


async def test_a_first_word_in_the_stts_first_second_does_not_end_the_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The STT's pause head reads "paused" (1.0) for its first 12 steps; a user who starts
    talking at once must not have the turn ended after the first word: the first word resets
    the prediction (conversation/machine.py)."""
    session, socket, _ = make_session(ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await configure(socket)
        with trio.fail_after(30):
            async with trio.open_nursery() as talking:

                async def talk() -> None:
                    await speak(socket, speech_like(2.4))
                    await speak(socket, silence(30.0))

                talking.start_soon(talk)
                await socket.wait_for("input_audio_buffer.speech_started")
                started_at = trio.current_time()
                await socket.wait_for("response.done")
                talking.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

    assert started_at < 1.0  # the first word came while the STT was warming up
    words = socket.times("conversation.item.input_audio_transcription.delta")
    [stopped] = socket.times("input_audio_buffer.speech_stopped")
    assert len(words) == 5 and stopped > words[-1]
    [heard] = [e for _, e in socket.sent if e["type"].endswith("transcription.completed")]
    assert heard["transcript"] == "Hello, how are you today?"


async def test_opus_from_the_tts_is_paced_by_the_packets_durations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Unmute dialect, Opus from the TTS: the in-memory TTS sends one 40 ms Ogg page per
    message (not the 80 ms of a PCM frame), and the pacer releases each by its own duration."""
    llm = ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0)
    session, socket, links = make_session(llm, lambda _: UnmuteFront(tts_opus=True))
    microphone = OggStream(encode_microphone([]))

    async def stream_silence() -> None:
        while True:
            page = base64.b64encode(microphone.next_page(None)).decode()
            await socket.to_server.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": page})
            )
            await trio.sleep(CHUNK_S)

    update = {"instructions": {"type": "smalltalk", "language": None}, "voice": None}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await socket.to_server.send(json.dumps({"type": "session.update", "session": update}))
        nursery.start_soon(stream_silence)
        with trio.fail_after(60):
            await socket.wait_for("response.audio.done")  # the greeting
        nursery.cancel_scope.cancel()

    audio = socket.times("response.audio.delta")
    # Each 40 ms page leaves at the later of: when the TTS made it (a word every 0.05 s, six
    # pages per word at once) and when playback is within AUDIO_LEAD_S of it.
    page_s, word_gap_s, pages_per_word = 0.04, 1 / 20.0, 6
    assert_paced(audio, page_s, pages_per_word, word_gap_s)
    assert len(audio) == pages_per_word * len(links.tts[0].words)


async def test_audio_held_for_a_whole_stt_frame_precedes_the_flush(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Microphone audio reaches the STT sender in whole 1920-sample frames; a flush decided
    while half a frame is held sends that half first, then the silence: nothing is lost, and the
    silence comes after everything the user said."""
    session, socket, links = make_session(ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0))
    pages = 3  # 40 ms each: one whole frame, then half of one held back
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await configure(socket)
        await speak(socket, speech_like(pages * CHUNK_S))
        with trio.fail_after(5):
            while not links.stt or links.stt[0].asr.samples_received < 1920:
                await trio.sleep(0.01)
        await trio.sleep(1)
        # One frame out; the third page waits for the rest of its frame.
        assert links.stt[0].asr.samples_received == 1920
        await socket.to_server.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await socket.wait_for("response.done")
        stt = links.stt_streams[0]
        asr = links.stt[0].asr
        # Every sample the client sent, and the eight frames of silence, entered the STT stream:
        # the STT client keeps back only what does not make a whole frame, the last half of the
        # silence.
        assert asr.samples_received + stt.buffered_samples == pages * 960 + 8 * 1920
        assert stt.buffered_samples == 960
        assert not stt._pending[:960].any()
        # The stream is now half a frame in: the next page completes a frame and goes out at
        # once, not with the page after it.
        before = asr.samples_received
        await speak(socket, speech_like(CHUNK_S))
        assert asr.samples_received == before + 1920
        nursery.cancel_scope.cancel()


async def test_the_keep_alive_frame_follows_the_audio_held_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that stops sending in the middle of a frame: after STT_KEEPALIVE_S the silent
    frame that keeps the STT stream open goes out after the held page, not before it."""
    session, socket, links = make_session(ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await configure(socket)
        await speak(socket, speech_like(CHUNK_S))  # one page: half a frame, held
        await trio.sleep(STT_KEEPALIVE_S + 2)
        stt, asr = links.stt_streams[0], links.stt[0].asr
        # The page and the 1920 zeros entered the stream in that order: one frame went out,
        # and the STT client keeps the last 960 zeros.
        assert asr.samples_received == 1920
        assert stt.buffered_samples == 960
        assert not stt._pending[:960].any()
        nursery.cancel_scope.cancel()
