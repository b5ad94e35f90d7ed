"""The local text-to-speech engine, served as moshi-server 0.6.4 ``/api/tts_streaming``.

Same wire protocol as the simulator (``testing/tts_sim.py``): auth, the four output formats,
``Ready`` / ``Error("no free channels")``, ``Text`` / ``Voice`` / ``Eos`` in (text frames and a
lone ``0x00`` too), ``Audio`` frames of exactly 1920 float32 samples and one ``Text(word,
start_s, stop_s)`` per word out, close after ``Eos`` once everything is spoken. The voice is
Piper's (:mod:`unmute_trio.engines.piper_voice`).

Piper speaks a sentence at a time, so text is gathered into **chunks**: a chunk is synthesised
as soon as a word ends a clause (``. , ! ? ; :``), when ``max_chunk_words`` have arrived
(``first_chunk_words`` for the first chunk of a stream), at
``Eos``, or when no new text came for ``stall_s`` (an LLM that pauses mid-sentence). The first
clause of a reply therefore starts speaking while the LLM is still writing the rest. Each
chunk's words are sent as ``Text`` messages just before its audio (text runs ahead of audio,
as with the real server); times are on the generated-audio timeline.

Deviations from a real moshi-server: ``Voice`` (custom voice) messages are accepted and
ignored — Piper cannot clone a voice — and every voice name is spoken by the local voice (a
name that is not in ``known_voices`` is logged once). ``<break/>`` tags are spoken as words.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import trio
from quart import websocket

from unmute_trio.engines import local_build_info
from unmute_trio.engines.piper_voice import PiperSynthesizer
from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    Error,
    TextOut,
    Voice,
)
from unmute_trio.testing.sim_base import (
    LOG_LENGTH,
    MoshiSimulator,
    is_authorized,
    run_accepted_stream,
)
from unmute_trio.testing.tts_sim import (
    FORMATS,
    TtsConnectionRecord,
    TtsOutput,
    TtsStreamBase,
    tts_close_code,
)

log = logging.getLogger(__name__)

# Words received but not yet synthesised. When full, the receiving task stops reading the
# socket, which pushes back on the client.
WORD_QUEUE_SIZE = 256
_CLAUSE_END = (".", ",", "!", "?", ";", ":")


@dataclass
class LocalTtsConfig:
    api_key: str = "public_token"
    capacity: int = 4
    synth_threads: int = 1  # Piper syntheses running at once, process-wide
    max_chunk_words: int = 20
    # The first chunk of a reply is cut sooner: the user is waiting for it, and a long first
    # clause ("The moon is approximately 384,400 kilometers away from the Earth.") would hold
    # the first audio until the LLM has written all of it. Later chunks are synthesised while
    # the earlier ones play, so they can wait for a whole clause, which Piper speaks better.
    first_chunk_words: int = 6
    stall_s: float = 0.5
    # Before Eos, a stream with no message for this long is closed. moshi-server uses 30 s; a
    # CPU LLM reading a long prompt on a busy machine can stay silent about that long before
    # its first word, while the session already holds the TTS stream open.
    idle_timeout_s: float | None = 60.0
    known_voices: frozenset[str] = field(default_factory=frozenset)  # voices.yaml paths


class LocalTtsEngine(MoshiSimulator):
    """Serve with ``port = await nursery.start(engine.serve)``; URL ``ws://127.0.0.1:{port}``."""

    def __init__(
        self, config: LocalTtsConfig | None = None, *, synthesizer: PiperSynthesizer | None = None
    ) -> None:
        self.config = config or LocalTtsConfig()
        self.synthesizer = synthesizer or PiperSynthesizer()
        self._limiter = trio.CapacityLimiter(self.config.synth_threads)
        self._unknown_voices_logged: set[str] = set()  # bounded: one log line per name, ≤ 1000
        self.connections_log: deque[TtsConnectionRecord] = deque(maxlen=LOG_LENGTH)
        super().__init__(
            name="local_tts",
            capacity=self.config.capacity,
            path="/api/tts_streaming",
            build_info=local_build_info("local-tts-piper-en_US-joe-medium"),
            handler=self._tts_streaming,
        )

    def _note_voice(self, voice: str | None) -> None:
        if voice is None or voice in self.config.known_voices:
            return
        if voice not in self._unknown_voices_logged and len(self._unknown_voices_logged) < 1000:
            self._unknown_voices_logged.add(voice)
            log.info("local TTS: voice %r is not known here; speaking with the local voice", voice)

    async def _tts_streaming(self) -> tuple[str, int] | None:
        with self._connections.connection():
            record = TtsConnectionRecord(
                authorized=is_authorized(self.config.api_key),
                voice=websocket.args.get("voice"),
                format=websocket.args.get("format", "OggOpus"),
            )
            self.connections_log.append(record)
            if not record.authorized:
                record.end = "unauthorized"
                return "", 401
            if record.format not in FORMATS:
                record.end = "bad_format"
                return "Failed to deserialize query string", 400
            self._note_voice(record.voice)
            output = TtsOutput(record.format)
            await run_accepted_stream(
                self._connections,
                record,
                refusal=output.message(Error(message="no free channels")),
                run=_TtsStream(self, record, output).start,
                close_code=tts_close_code,
            )
            if record.end not in ("finished", "eos_without_text"):
                log.info("local TTS stream ended: %s", record.end)
        return None


class _TtsStream(TtsStreamBase):
    """The local engine's generator: Piper, a clause (or a few words) at a time."""

    log_name = "local TTS"

    def __init__(
        self, engine: LocalTtsEngine, record: TtsConnectionRecord, output: TtsOutput
    ) -> None:
        super().__init__(record, output, engine.config.idle_timeout_s)
        self._engine = engine
        self._cfg = engine.config
        self._seconds = 0.0  # audio generated so far

    def _voice_received(self, msg: Voice) -> None:
        super()._voice_received(msg)
        log.info("local TTS: custom voices are not supported; using the local voice")

    # ---------------------------------------------------------------- generating

    async def _generate(self) -> str:
        chunk: list[str] = []  # at most max_chunk_words
        async with self._words_out:
            while True:
                with trio.move_on_after(self._cfg.stall_s if chunk else math.inf):
                    try:
                        word = await self._words_out.receive()
                    except trio.EndOfChannel:
                        break
                    chunk.append(word)
                    limit = (
                        self._cfg.max_chunk_words
                        if self._record.words_spoken
                        else self._cfg.first_chunk_words
                    )
                    if not (word.endswith(_CLAUSE_END) or len(chunk) >= limit):
                        continue
                if not await self._speak(chunk):
                    return "synthesis_failed"
                chunk = []
        if chunk and not await self._speak(chunk):
            return "synthesis_failed"
        if not self._record.words_spoken:
            return "eos_without_text"
        await self._finish_audio()
        return "finished"

    async def _speak(self, words: list[str]) -> bool:
        text = " ".join(words)
        try:
            synthesis = await trio.to_thread.run_sync(
                self._engine.synthesizer.synthesize,
                text,
                limiter=self._engine._limiter,
                abandon_on_cancel=True,  # an interrupted reply need not wait for its sentence
            )
        except Exception:
            log.exception("local TTS: synthesis failed for %r", text)
            return False
        offset = self._seconds
        for timing in synthesis.words:
            msg = TextOut(
                text=timing.text, start_s=offset + timing.start_s, stop_s=offset + timing.stop_s
            )
            await self._send(self._output.message(msg))
            self._record.words_spoken.append(timing.text)
        self._seconds += len(synthesis.audio) / SAMPLE_RATE
        await self._queue_audio(synthesis.audio.astype(np.float32))
        return True


__all__ = ["WORD_QUEUE_SIZE", "LocalTtsConfig", "LocalTtsEngine"]
