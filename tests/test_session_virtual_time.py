"""A whole OpenAI-protocol session on trio's virtual clock, through the session's seams: an
in-memory client socket, in-memory STT/TTS links (the simulators' models, wire bytes but no
sockets) and a scripted LLM. Nothing here waits for real time or a socket, so every event's
time is exact and the test asserts it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import trio
import trio.testing

from unmute_trio.protocol.g711 import float32_to_pcm16
from unmute_trio.services.llm import LLMClient
from unmute_trio.session.drain import Drain
from unmute_trio.session.openai_front import OpenAIFront
from unmute_trio.session.pacer import AUDIO_LEAD_S
from unmute_trio.session.runner import Session
from unmute_trio.settings import Settings
from unmute_trio.testing.in_memory import InMemoryLinks, ScriptedLlm
from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.voice_store import VoiceStore
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

    async def receive(self) -> str | bytes:
        return await self._from_client.receive()

    async def send(self, text: str) -> None:
        self.sent.append((trio.current_time(), json.loads(text)))
        self.got_event.set()

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)

    def times(self, kind: str) -> list[float]:
        return [t for t, e in self.sent if e["type"] == kind]

    async def wait_for(self, kind: str) -> None:
        while not self.times(kind):
            self.got_event = trio.Event()
            await self.got_event.wait()


async def test_a_spoken_turn_has_exact_times(autojump_clock: trio.testing.MockClock) -> None:
    links = InMemoryLinks()
    llm = ScriptedLlm(ttft_s=TTFT_S, words_per_s=20.0)
    ctx = Context(
        settings=Settings(),
        voices=[],
        voice_store=VoiceStore(ttl_s=60, max_entries=4, clock=trio.current_time),
        llm=llm,
    )
    socket = MemorySocket()
    session = Session(socket, ctx, OpenAIFront(ctx, {"model": "m"}), links)

    async def speak(pcm: Any) -> None:
        step = int(24_000 * CHUNK_S)
        for i in range(0, len(pcm), step):
            audio = base64.b64encode(float32_to_pcm16(pcm[i : i + step])).decode()
            await socket.to_server.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": audio})
            )
            await trio.sleep(CHUNK_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await socket.wait_for("session.created")
        update = {"type": "realtime", "audio": {"input": {"transcription": {"model": "any"}}}}
        await socket.to_server.send(json.dumps({"type": "session.update", "session": update}))
        await socket.wait_for("session.updated")
        started = trio.current_time()
        await speak(speech_like(1.6))
        spoken_until = trio.current_time()
        with trio.fail_after(30):
            async with trio.open_nursery() as talking:
                talking.start_soon(speak, silence(10.0))
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
    expected = [
        audio[0] + max((k // frames_per_word) * word_gap_s, k * frame_s - AUDIO_LEAD_S)
        for k in range(len(audio))
    ]
    assert all(abs(a - b) < 1e-9 for a, b in zip(audio, expected, strict=True)), audio
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
