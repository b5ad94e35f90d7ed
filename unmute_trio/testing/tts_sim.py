"""A protocol-exact simulator of moshi-server 0.6.4 text-to-speech (``/api/tts_streaming``).

It speaks the real wire protocol (docs/services.md) over a real socket and "synthesises"
:func:`~unmute_trio.testing.speech.speech_like` audio whose length is proportional to the text.

Behaviour, per connection
- ``GET /api/build_info``: no auth, JSON with the ten build-info keys (fake values).
- Auth: header ``kyutai-api-key`` or, when absent, query ``auth_id``; otherwise HTTP 401 before
  the upgrade. Query ``format`` (default ``OggOpus``, as the real server): ``PcmMessagePack``,
  ``OggOpusMessagePack``, ``Pcm`` or ``OggOpus``; anything else → HTTP 400. Query ``voice`` is
  recorded, never validated (the real server falls back to its default voice).
- More than ``capacity`` concurrent streams: accept, ``Error("no free channels")`` (MessagePack
  formats only), close. Otherwise, after ``handshake_delay_s``, ``Ready`` (MessagePack formats)
  and, for Ogg formats, the Ogg header pages (raw, or in an ``OggOpus`` message).
- In: binary msgpack ``Text`` / ``Voice`` / ``Eos``, text frames (same as ``Text``), a single
  ``0x00`` byte (same as ``Eos``). Text is normalised like the server (``’``→``'``, ``–``
  removed, ``:``→space, parentheses removed) and split on whitespace. ``<break/>`` tags are not
  interpreted (they are spoken as words).
- Out: each word gets ``seconds_per_word`` of audio (at least one 80 ms frame), contiguous on
  the generated-audio timeline. Just before a word's first sample is queued, ``Text(word,
  start_s, stop_s)`` is sent with its place on that timeline, so text runs ahead of audio.
  Audio goes out as frames of exactly 1920 float32 samples (``Audio``), or as Ogg pages / raw
  little-endian f32 bytes for the other formats; the last frame is zero-padded. A word is only
  synthesised once ``lookahead_words`` more words are queued, or after ``Eos`` (the real model
  also needs lookahead, so the final words wait for ``Eos``).
- Pacing: consecutive frames are at least ``0.08 s / realtime_factor`` apart (trio clock, so
  virtual time works); ``realtime_factor`` 0 or ``inf`` means no pacing.
- ``Eos`` before any text: close at once, no audio. After ``Eos``: finish all queued words, then
  close. Before ``Eos``, ``idle_timeout_s`` without any message closes the stream.

``TtsSimulator.connections_log`` holds a :class:`TtsConnectionRecord` per connection (newest
last, the last 1000): the ``voice`` query parameter, whether a ``Voice`` message arrived, the
texts received, the words spoken, frames sent and how the stream ended.

Deviations from a real moshi-server
- Close frames carry code 1000 (the real server sends an empty close frame, reported as 1005 by
  most clients); killed streams (:meth:`TtsSimulator.kill_connections`) and undecodable messages
  close with 1011. No keep-alive pings (ASGI cannot send them).
- No model audio delay: the first audio frame follows the first Text immediately.
- Custom voices are not applied; ``/api/modules_info``, ``/metrics`` and ``POST`` are not served.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import sphn
import trio
from quart import websocket

from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.moshi import (
    FRAME_TIME_S,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Audio,
    Eos,
    Error,
    OggOpus,
    Ready,
    TextIn,
    TextOut,
    Voice,
    decode_tts_client,
    encode,
)
from unmute_trio.protocol.ogg_opus import OggOpusWriter, OpusAudioReader
from unmute_trio.testing.sim_base import (
    LOG_LENGTH,
    MoshiSimulator,
    first_to_return,
    is_authorized,
    run_accepted_stream,
)
from unmute_trio.testing.speech import speech_like

log = logging.getLogger(__name__)

FORMATS = ("PcmMessagePack", "OggOpusMessagePack", "Pcm", "OggOpus")
# Words received but not yet synthesised. When full, the receiving task stops reading the
# socket, which pushes back on the client (the real server queues without limit).
WORD_QUEUE_SIZE = 256
NORMALISE_TEXT = str.maketrans({"’": "'", "–": None, ":": " ", "(": None, ")": None})


@dataclass
class TtsSimConfig:
    api_key: str = "public_token"
    capacity: int = 16
    realtime_factor: float = 4.0  # audio produced this many times faster than real time
    seconds_per_word: float = 0.3  # duration of generated speech per word (≥ 1 frame)
    handshake_delay_s: float = 0.0
    lookahead_words: int = 1  # a word is synthesised once this many more are queued, or at Eos
    idle_timeout_s: float | None = 30.0  # like the real receive loop (before Eos); None disables


@dataclass
class TtsConnectionRecord:
    """What one connection did, for tests (``TtsSimulator.connections_log``)."""

    authorized: bool
    voice: str | None = None  # the ``voice`` query parameter
    format: str = "OggOpus"
    at_capacity: bool = False
    voice_message: bool = False  # a Voice message was received
    voice_shape: list[int] | None = None
    texts: list[str] = field(default_factory=list)  # every Text received, as sent
    words_spoken: list[str] = field(default_factory=list)
    frames_sent: int = 0
    eos: bool = False
    end: str | None = None  # "finished", "eos_without_text", "client", "killed", ...


class TtsOutput:
    """Encodes what a connection sends, for its ``format``."""

    def __init__(self, fmt: str) -> None:
        self.msgpack = fmt.endswith("MessagePack")
        self._ogg = sphn.OpusStreamWriter(SAMPLE_RATE) if fmt.startswith("OggOpus") else None

    def message(self, msg: Ready | Error | TextOut) -> bytes | None:
        return encode(msg) if self.msgpack else None  # raw formats carry audio only

    def header(self) -> bytes | None:
        return None if self._ogg is None else self._pages(np.zeros(0, dtype=np.float32))

    def audio(self, frame: np.ndarray) -> bytes | None:
        if self._ogg is not None:
            return self._pages(frame)
        return encode(Audio(pcm=frame)) if self.msgpack else frame.astype("<f4").tobytes()

    def _pages(self, pcm: np.ndarray) -> bytes | None:
        assert self._ogg is not None
        pages = self._ogg.append_pcm(pcm)
        if not pages:
            return None  # the encoder is still filling a packet
        return encode(OggOpus(data=pages)) if self.msgpack else pages


# Encoding every session's audio was, with format=OggOpusMessagePack, the largest cost of the
# simulator under load, which shares a core with the load generator: the real server encodes on
# its own GPU host. Sessions of a load test speak the same replies, so a stream's packets are
# looked up by a running CRC of all the audio its encoder has been given: the same audio from
# the start gives the same encoder state, hence the same packets. On a miss, or once a stream
# has sent HISTORY_FRAMES (~30 s) from the cache, it encodes from then on, with an encoder caught
# up on every frame it sent before: its packets are always those of one continuous encoder.
# ~300 bytes an entry; the oldest entry goes first.
OPUS_CACHE_ENTRIES = 8192
HISTORY_FRAMES = 375
_opus_cache: collections.OrderedDict[int, tuple[bytes, ...]] = collections.OrderedDict()


class SimTtsOutput(TtsOutput):
    """:class:`TtsOutput` whose Ogg formats reuse packets already encoded by another stream
    that was given the same audio (see above); the pages are this stream's own."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._stream = OggOpusWriter()
        self._key = 0
        self._history: list[np.ndarray] = []
        self._encoder: sphn.OpusStreamWriter | None = None
        self._encoded = OpusAudioReader()

    def header(self) -> bytes | None:
        if self._ogg is None:
            return None
        return self._wrap(self._stream.header())

    def audio(self, frame: np.ndarray) -> bytes | None:
        if self._ogg is None:
            return super().audio(frame)
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        self._key = zlib.crc32(frame.tobytes(), self._key)
        packets = None if self._encoder is not None else _opus_cache.get(self._key)
        if packets is None:
            packets = tuple(self._encoded.feed(self._encoder_for().append_pcm(frame)))
            _opus_cache[self._key] = packets
            if len(_opus_cache) > OPUS_CACHE_ENTRIES:
                _opus_cache.popitem(last=False)
        else:
            self._history.append(frame)
            if len(self._history) == HISTORY_FRAMES:
                self._encoder_for()  # the catch-up stays exact and bounded
        pages = self._stream.pages(packets)
        return self._wrap(pages) if pages else None

    def _encoder_for(self) -> sphn.OpusStreamWriter:
        if self._encoder is None:
            self._encoder = sphn.OpusStreamWriter(SAMPLE_RATE)
            for frame in self._history:  # same state as the streams whose packets were sent
                self._encoded.feed(self._encoder.append_pcm(frame))
            self._history.clear()
        return self._encoder

    def _wrap(self, pages: bytes) -> bytes:
        return encode(OggOpus(data=pages)) if self.msgpack else pages


def tts_close_code(end: str) -> int:
    """How a TTS stream is closed, given why it ended."""
    failed = end in ("killed", "invalid_message", "synthesis_failed")
    return CloseCode.INTERNAL_ERROR if failed else CloseCode.NORMAL


class TtsStreamBase:
    """One accepted TTS stream after the handshake: a task reading the client's text and a task
    generating audio (:meth:`_generate`, the subclass's). The simulator and the local engine
    share the reading side and the framing of audio, so both read the protocol the same way.
    """

    log_name = "TTS simulator"

    def __init__(
        self, record: TtsConnectionRecord, output: TtsOutput, idle_timeout_s: float | None
    ) -> None:
        self._record = record
        self._output = output
        self._idle_s = math.inf if idle_timeout_s is None else idle_timeout_s
        self._words_in, self._words_out = trio.open_memory_channel[str](WORD_QUEUE_SIZE)
        self._audio = np.zeros(0, dtype=np.float32)  # less than one frame, between chunks

    async def start(self) -> str:
        """The handshake (``Ready``, then the Ogg header in Ogg formats), then :meth:`run`."""
        await self._send(self._output.message(Ready()))
        await self._send(self._output.header())
        return await self.run()

    async def run(self) -> str:
        return await first_to_return(self._receive, self._generate)

    async def _generate(self) -> str:
        """Speak the words of ``self._words_out`` until it ends; why the stream ended."""
        raise NotImplementedError

    async def _send(self, data: bytes | None) -> None:
        if data is not None:
            await websocket.send(data)

    # ---------------------------------------------------------------- receiving

    async def _receive(self) -> str:
        """Feed words to the generator until Eos; then keep draining the socket."""
        while True:
            with trio.move_on_after(math.inf if self._record.eos else self._idle_s) as idle:
                data = await websocket.receive()
            if idle.cancelled_caught:
                return "idle_timeout"
            if isinstance(data, str):
                await self._text(data)
            elif data == b"\x00":
                await self._eos()
            elif data is not None:
                try:
                    msg = decode_tts_client(data)
                except WireFormatError as e:
                    log.info("%s closing a stream: %s", self.log_name, e)
                    return "invalid_message"
                if isinstance(msg, TextIn):
                    await self._text(msg.text)
                elif isinstance(msg, Eos):
                    await self._eos()
                else:
                    self._voice_received(msg)

    def _voice_received(self, msg: Voice) -> None:
        self._record.voice_message = True
        self._record.voice_shape = list(msg.shape)

    async def _text(self, text: str) -> None:
        if self._record.eos:
            return  # the real server ignores text after the end of stream
        self._record.texts.append(text)
        for word in text.translate(NORMALISE_TEXT).split():
            await self._words_in.send(word)

    async def _eos(self) -> None:
        if not self._record.eos:
            self._record.eos = True
            await self._words_in.aclose()

    # ---------------------------------------------------------------- audio out

    async def _queue_audio(self, pcm: np.ndarray) -> None:
        """Send ``pcm`` in whole frames; the rest waits for more (or :meth:`_finish_audio`)."""
        self._audio = np.concatenate([self._audio, pcm])
        while len(self._audio) >= SAMPLES_PER_FRAME:
            frame, self._audio = self._audio[:SAMPLES_PER_FRAME], self._audio[SAMPLES_PER_FRAME:]
            await self._send_frame(frame)

    async def _finish_audio(self) -> None:
        """The last partial frame, padded with silence."""
        if len(self._audio):
            pad = np.zeros(SAMPLES_PER_FRAME - len(self._audio), dtype=np.float32)
            await self._send_frame(np.concatenate([self._audio, pad]))
            self._audio = self._audio[:0]

    async def _send_frame(self, frame: np.ndarray) -> None:
        await self._send(self._output.audio(np.clip(frame, -0.99, 0.99)))
        self._record.frames_sent += 1


# Synthesising a word's audio was a third of the simulator's CPU under load tests, where every
# session speaks the same replies: the seed depends only on the word and its place, so the same
# audio comes back again and again. The most recent words are kept (read-only: frames are
# copied out of them); at ~0.3 s a word, 256 of them are under 8 MB.
WORD_AUDIO_CACHE = 256


@functools.lru_cache(maxsize=WORD_AUDIO_CACHE)
def _word_audio(n_samples: int, seed: int) -> np.ndarray:
    audio = speech_like(n_samples / SAMPLE_RATE, seed=seed)
    audio.flags.writeable = False
    return audio


class _TtsStream(TtsStreamBase):
    """The simulator's generator: ``speech_like`` audio per word, paced at ``realtime_factor``."""

    def __init__(self, cfg: TtsSimConfig, record: TtsConnectionRecord, output: TtsOutput) -> None:
        super().__init__(record, output, cfg.idle_timeout_s)
        self._cfg = cfg
        self._samples_generated = 0
        self._last_frame_at: float | None = None

    # ---------------------------------------------------------------- generating

    async def _generate(self) -> str:
        waiting: deque[str] = deque()  # at most lookahead_words + 1
        async with self._words_out:
            async for word in self._words_out:
                waiting.append(word)
                while len(waiting) > self._cfg.lookahead_words:
                    await self._speak(waiting.popleft())
        if not waiting and not self._record.words_spoken:
            return "eos_without_text"
        while waiting:
            await self._speak(waiting.popleft())
        await self._finish_audio()
        return "finished"

    async def _speak(self, word: str) -> None:
        index = len(self._record.words_spoken)
        n_samples = max(SAMPLES_PER_FRAME, round(self._cfg.seconds_per_word * SAMPLE_RATE))
        start_s = self._samples_generated / SAMPLE_RATE
        self._samples_generated += n_samples
        stop_s = self._samples_generated / SAMPLE_RATE
        await self._send(self._output.message(TextOut(text=word, start_s=start_s, stop_s=stop_s)))
        self._record.words_spoken.append(word)
        seed = zlib.crc32(f"{index}:{word}".encode())
        await self._queue_audio(_word_audio(n_samples, seed))

    async def _send_frame(self, frame: np.ndarray) -> None:
        rtf = self._cfg.realtime_factor
        now = trio.current_time()
        at = now
        if 0 < rtf < math.inf and self._last_frame_at is not None:
            at = max(now, self._last_frame_at + FRAME_TIME_S / rtf)
            await trio.sleep_until(at)
        self._last_frame_at = at
        await super()._send_frame(frame)


class TtsSimulator(MoshiSimulator):
    """Serve with ``port = await nursery.start(sim.serve)``; URL ``ws://127.0.0.1:{port}``."""

    def __init__(self, config: TtsSimConfig | None = None) -> None:
        self.config = config or TtsSimConfig()
        # Newest last; bounded (see LOG_LENGTH).
        self.connections_log: deque[TtsConnectionRecord] = deque(maxlen=LOG_LENGTH)
        super().__init__(
            name="tts_simulator",
            capacity=self.config.capacity,
            path="/api/tts_streaming",
            handler=self._tts_streaming,
        )

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
                return "", 401  # before accept: hypercorn answers a real HTTP 401
            if record.format not in FORMATS:
                record.end = "bad_format"
                return "Failed to deserialize query string", 400
            output = SimTtsOutput(record.format)

            async def run() -> str:
                await trio.sleep(self.config.handshake_delay_s)
                stream = _TtsStream(self.config, record, output)
                return await stream.start()

            await run_accepted_stream(
                self._connections,
                record,
                refusal=output.message(Error(message="no free channels")),
                run=run,
                close_code=tts_close_code,
            )
        return None


__all__ = [
    "FORMATS",
    "NORMALISE_TEXT",
    "TtsConnectionRecord",
    "TtsOutput",
    "TtsSimConfig",
    "TtsSimulator",
    "TtsStreamBase",
    "tts_close_code",
]
