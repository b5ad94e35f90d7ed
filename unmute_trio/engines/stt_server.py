"""The local speech-to-text engine, served as moshi-server 0.6.4 ``/api/asr-streaming``.

Same wire protocol, auth, ``Ready``/``Error`` handshake, capacity refusal and idle timeout as
the simulator (``testing/stt_sim.py``, whose serving base it shares), but the words are
Moonshine's transcription of the audio and the pause heads come from Silero VAD. The
streaming rules live in :mod:`unmute_trio.engines.transcriber`; this module is the trio shell.

Per connection, two tasks:
- ``receive``: socket → audio re-buffered into 1920-sample frames → 16 kHz → VAD (in a worker
  thread) → transcriber → send what is ready. It stops reading while more than
  ``MAX_HELD_MESSAGES`` are held back for a decode, which pushes back on the client.
- ``decode``: the transcriber's decode jobs, one at a time, Moonshine in a worker thread.

Model inference never runs on the trio thread: the VAD and Moonshine run through
``trio.to_thread`` behind process-wide capacity limiters (``vad_threads``,
``decode_threads``), so a burst of streams queues for the CPU instead of oversubscribing it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import sphn
import trio
from quart import websocket

from unmute_trio.engines import local_build_info
from unmute_trio.engines.moonshine import MoonshineRecognizer
from unmute_trio.engines.resample import Resampler24To16
from unmute_trio.engines.transcriber import StreamingTranscriber, TranscriberPolicy
from unmute_trio.engines.vad import SileroVadModel
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Audio,
    Error,
    Marker,
    OggOpus,
    Ready,
    decode_stt_client,
    encode,
)
from unmute_trio.testing.sim_base import (
    LOG_LENGTH,
    MoshiSimulator,
    first_to_return,
    is_authorized,
    run_accepted_stream,
)
from unmute_trio.testing.stt_sim import SttConnectionRecord, decode_ogg_chunk, stt_close_code

log = logging.getLogger(__name__)

# Messages (Steps, markers) held back waiting for a decode before the receiver stops reading:
# 250 Steps are 20 s of audio, far beyond a normal decode (< 2 s) but bounded.
MAX_HELD_MESSAGES = 250


@dataclass
class LocalSttConfig:
    api_key: str = "public_token"
    capacity: int = 4  # concurrent streams; beyond → Error "no free channels" + close
    idle_timeout_s: float | None = 20.0  # like the real receive loop; None disables
    decode_threads: int = 1  # Moonshine decodes running at once, process-wide
    vad_threads: int = 1
    policy: TranscriberPolicy = field(default_factory=TranscriberPolicy)


class LocalSttEngine(MoshiSimulator):
    """Serve with ``port = await nursery.start(engine.serve)``; URL ``ws://127.0.0.1:{port}``.

    Loading the models takes about a second: construct it once per process (or pass models
    already loaded, as the tests do).
    """

    def __init__(
        self,
        config: LocalSttConfig | None = None,
        *,
        recognizer: MoonshineRecognizer | None = None,
        vad: SileroVadModel | None = None,
    ) -> None:
        self.config = config or LocalSttConfig()
        self.recognizer = recognizer or MoonshineRecognizer()
        self.vad = vad or SileroVadModel()
        self._decode_limiter = trio.CapacityLimiter(self.config.decode_threads)
        self._vad_limiter = trio.CapacityLimiter(self.config.vad_threads)
        self.connections_log: deque[SttConnectionRecord] = deque(maxlen=LOG_LENGTH)
        super().__init__(
            name="local_stt",
            capacity=self.config.capacity,
            path="/api/asr-streaming",
            build_info=local_build_info("local-stt-moonshine-base-en"),
            handler=self._asr_streaming,
        )

    async def _asr_streaming(self) -> tuple[str, int] | None:
        with self._connections.connection():
            record = SttConnectionRecord(authorized=is_authorized(self.config.api_key))
            self.connections_log.append(record)
            if not record.authorized:
                record.end = "unauthorized"
                return "", 401  # before accept: hypercorn answers a real HTTP 401

            async def run() -> str:
                await websocket.send(encode(Ready()))
                return await _SttStream(self, record).run()

            await run_accepted_stream(
                self._connections,
                record,
                refusal=encode(Error(message="no free channels")),
                run=run,
                close_code=stt_close_code,
            )
            log.info("local STT stream ended: %s", record.end)
        return None


class _SttStream:
    def __init__(self, engine: LocalSttEngine, record: SttConnectionRecord) -> None:
        self._engine = engine
        self._record = record
        self._transcriber = StreamingTranscriber(engine.config.policy)
        self._vad = engine.vad.stream()
        self._resampler = Resampler24To16()
        self._pending = np.zeros(0, dtype=np.float32)  # < one frame between messages
        self._opus: sphn.OpusStreamReader | None = None
        self._send_lock = trio.Lock()
        # Wakes the decoder (new job possible) and the receiver (held messages released).
        self._decode_wakeup = trio.Event()
        self._released = trio.Event()

    async def run(self) -> str:
        return await first_to_return(self._receive, self._decode)

    # ---------------------------------------------------------------- receiving

    async def _receive(self) -> str:
        cfg = self._engine.config
        idle = math.inf if cfg.idle_timeout_s is None else cfg.idle_timeout_s
        while True:
            while self._transcriber.held > MAX_HELD_MESSAGES:
                self._released = trio.Event()
                await self._released.wait()
            with trio.move_on_after(idle) as idle_scope:
                data = await websocket.receive()
            if idle_scope.cancelled_caught:
                return "idle_timeout"
            if not isinstance(data, bytes):
                continue  # the real server ignores text frames
            try:
                msg = decode_stt_client(data)
                if isinstance(msg, Marker):
                    self._transcriber.add_marker(msg.id)
                    continue
                pcm = msg.pcm if isinstance(msg, Audio) else self._decode_ogg(msg)
            except (WireFormatError, OverflowError) as e:
                log.info("local STT closing a stream: %s", e)
                return "invalid_message"
            await self._push_audio(pcm)

    def _decode_ogg(self, msg: OggOpus) -> np.ndarray:
        if self._opus is None:
            self._opus = sphn.OpusStreamReader(SAMPLE_RATE)
        return decode_ogg_chunk(self._opus, msg.data)

    async def _push_audio(self, pcm: np.ndarray) -> None:
        self._transcriber.note_received(len(pcm))
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32, copy=False)])
        while len(self._pending) >= SAMPLES_PER_FRAME:
            frame = self._pending[:SAMPLES_PER_FRAME]
            self._pending = self._pending[SAMPLES_PER_FRAME:]
            pcm16 = self._resampler.process(frame)
            probs = await trio.to_thread.run_sync(
                self._vad.probabilities, pcm16, limiter=self._engine._vad_limiter
            )
            self._transcriber.frame(probs, pcm16)
            self._record.frames_processed = self._transcriber.frames_processed
            self._decode_wakeup.set()
            await self._send_ready()

    # ---------------------------------------------------------------- decoding

    async def _decode(self) -> str:
        engine = self._engine
        while True:
            job = self._transcriber.next_decode()
            if job is None:
                self._decode_wakeup = trio.Event()
                await self._decode_wakeup.wait()
                continue
            try:
                text = await trio.to_thread.run_sync(
                    engine.recognizer.transcribe,
                    job.audio,
                    limiter=engine._decode_limiter,
                    abandon_on_cancel=True,  # a closed stream need not wait for its decode
                )
            except Exception:  # a model failure loses this segment's words, not the stream
                log.exception("local STT: transcription failed; the segment's words are lost")
                text = ""
            self._transcriber.decoded(job, text)
            await self._send_ready()
            self._released.set()

    async def _send_ready(self) -> None:
        async with self._send_lock:
            for msg in self._transcriber.drain():
                if msg.type == "Word":
                    self._record.words_sent.append(msg.text)
                elif msg.type == "Marker":
                    self._record.markers_echoed.append(msg.id)
                await websocket.send(encode(msg))


__all__ = ["MAX_HELD_MESSAGES", "LocalSttConfig", "LocalSttEngine"]
