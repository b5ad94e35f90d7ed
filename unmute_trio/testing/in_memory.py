"""Whole sessions without sockets: the simulators' models behind in-process links.

``InMemoryLinks`` gives a ``Session`` (``session.links.ServiceLinks``) STT and TTS streams
whose transports run a model in the same trio run: the STT simulator's ``SimulatedAsr`` and a
tone TTS. Messages still cross as moshi-server wire bytes (msgpack), both ways, so the service
clients' decoding and checks run as in production; only the socket is gone. ``ScriptedLlm``
stands in for ``LLMClient`` with the LLM simulator's replies. Nothing here reads a clock but
trio's, so a session on ``trio.testing.MockClock`` is deterministic and its event times exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import sphn
import trio

from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Audio,
    Eos,
    Marker,
    OggOpus,
    TextIn,
    TextOut,
    Voice,
    decode_stt_client,
    decode_stt_server,
    decode_tts_client,
    decode_tts_server,
    encode,
)
from unmute_trio.protocol.ogg_opus import split_pages
from unmute_trio.protocol.openai_chat import ReplyOutcome
from unmute_trio.services.stt import SpeechToText
from unmute_trio.services.tts import TextToSpeech
from unmute_trio.testing.llm_sim import default_reply
from unmute_trio.testing.speech import DEFAULT_STT_SCRIPT, SimulatedAsr

# Messages a transport holds for its reader. A session reads its STT continuously and a turn
# reads its TTS through a bounded queue, so more than this means a reader stopped: a bug.
MAX_PENDING_MESSAGES = 10_000
WORD_BUFFER = 64


class _Transport:
    """Encoded messages waiting for ``receive``; ``None`` after the last one once ended."""

    def __init__(self, service: str, decode: Any) -> None:
        self.service = service
        self._decode = decode
        self._pending: deque[bytes] = deque()
        self._ended = False
        self._arrived = trio.Event()

    def _put(self, message: Any) -> None:
        if len(self._pending) >= MAX_PENDING_MESSAGES:
            raise OverflowError(f"in-memory {self.service}: nobody reads its messages")
        self._pending.append(encode(message))
        self._arrived.set()

    def _end(self) -> None:
        self._ended = True
        self._arrived.set()

    async def receive(self) -> Any:
        while not self._pending:
            if self._ended:
                return None
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self._decode(self._pending.popleft())


class AsrTransport(_Transport):
    """The STT simulator's model: every complete frame sent is stepped at once."""

    def __init__(self, asr: SimulatedAsr) -> None:
        super().__init__("stt", decode_stt_server)
        self.asr = asr

    async def send(self, data: bytes) -> None:
        message = decode_stt_client(data)
        if isinstance(message, Audio):
            self.asr.push_pcm(message.pcm)
        elif isinstance(message, Marker):
            self.asr.add_marker(message.id)
        else:
            raise ValueError("the in-memory STT takes PCM audio only")
        while self.asr.has_frame():
            for out in self.asr.step():
                self._put(out)


class ToneTtsTransport(_Transport):
    """A TTS that speaks each word, as it arrives, as ``word_s`` of a quiet tone: its ``Text``
    (times on the generated-audio timeline) and then its 1920-sample frames, as ``Audio`` or,
    with ``opus``, as ``OggOpus`` messages of one page each, 960 samples
    (``format=OggOpusMessagePack``)."""

    def __init__(self, word_s: float = 0.24, *, opus: bool = False) -> None:
        super().__init__("tts", decode_tts_server)
        self._opus = sphn.OpusStreamWriter(SAMPLE_RATE) if opus else None
        self.words: list[str] = []
        self._frames_per_word = max(1, round(word_s * SAMPLE_RATE / SAMPLES_PER_FRAME))
        self._seconds = 0.0

    async def send(self, data: bytes) -> None:
        message = decode_tts_client(data)
        if isinstance(message, TextIn):
            for word in message.text.split():
                self._speak(word)
        elif isinstance(message, Eos):
            self._end()
        elif not isinstance(message, Voice):
            raise ValueError(f"unexpected TTS message {message!r}")

    def _speak(self, word: str) -> None:
        self.words.append(word)
        frame_s = SAMPLES_PER_FRAME / SAMPLE_RATE
        stop = self._seconds + self._frames_per_word * frame_s
        self._put(TextOut(text=word, start_s=self._seconds, stop_s=stop))
        t = np.arange(SAMPLES_PER_FRAME, dtype=np.float32) / SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        for _ in range(self._frames_per_word):
            if self._opus is None:
                self._put(Audio(pcm=tone))
            else:
                # One message per Ogg page (40 ms), the headers on their own: the session must
                # pace by the packets' durations, not by messages.
                for page in split_pages(self._opus.append_pcm(tone)):
                    self._put(OggOpus(data=page))
        self._seconds = stop


class InMemoryLinks:
    """``ServiceLinks`` whose streams run in-process; the transports are kept for assertions."""

    def __init__(self, stt_script: tuple[str, ...] = DEFAULT_STT_SCRIPT) -> None:
        self._script = stt_script
        self.stt: list[AsrTransport] = []
        self.stt_streams: list[SpeechToText] = []
        self.tts: list[ToneTtsTransport] = []

    @asynccontextmanager
    async def open_stt(self) -> AsyncIterator[SpeechToText]:
        transport = AsrTransport(SimulatedAsr(self._script))
        self.stt.append(transport)
        stream = SpeechToText(transport)
        self.stt_streams.append(stream)
        yield stream

    @asynccontextmanager
    async def open_tts(
        self, voice: str | None, custom_voice_message: bytes | None, *, opus: bool = False
    ) -> AsyncIterator[TextToSpeech]:
        transport = ToneTtsTransport(opus=opus)
        self.tts.append(transport)
        yield TextToSpeech(transport, opus=opus)


class ScriptedLlm:
    """The LLM simulator's replies (``llm_sim.default_reply``) without HTTP: the first word
    after ``ttft_s``, the next ones every ``1 / words_per_s``."""

    def __init__(self, *, ttft_s: float = 0.2, words_per_s: float = 20.0) -> None:
        self.ttft_s = ttft_s
        self.words_per_s = words_per_s
        self.requests: list[list[dict[str, Any]]] = []

    @property
    def known_model(self) -> str | None:
        return "in-memory-llm"

    async def model(self) -> str:
        return "in-memory-llm"

    @asynccontextmanager
    async def stream_words(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        outcome: ReplyOutcome | None = None,
    ) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        self.requests.append([dict(m) for m in messages])
        users = [m for m in messages if m.get("role") == "user"]
        words = default_reply(str(users[-1]["content"]) if users else None).split()
        send, receive = trio.open_memory_channel[str](WORD_BUFFER)

        async def produce() -> None:
            async with send:
                await trio.sleep(self.ttft_s)
                for i, word in enumerate(words):
                    if i:
                        await trio.sleep(1 / self.words_per_s)
                    await send.send(word if i == 0 else " " + word)
            if outcome is not None:
                outcome.finish_reason = "stop"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            with receive:
                yield receive
            nursery.cancel_scope.cancel()
