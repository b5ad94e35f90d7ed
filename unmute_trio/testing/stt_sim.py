"""A protocol-exact simulator of moshi-server 0.6.4 speech-to-text (``/api/asr-streaming``).

It speaks the real wire protocol (docs/services.md) over a real socket, with a deterministic
"model": the transcription is a pure function of the audio samples received, never of the wall
clock, so sessions on virtual time and load tests see the same words.

Behaviour, per connection
- ``GET /api/build_info``: no auth, JSON with the ten build-info keys (fake values).
- Auth: header ``kyutai-api-key`` or, when absent, query ``auth_id``; otherwise HTTP 401 before
  the upgrade. More than ``capacity`` concurrent streams: accept, ``Error("no free channels")``,
  close. Otherwise ``Ready`` first, after ``handshake_delay_s``.
- ``Audio`` of any length is re-buffered into 1920-sample frames; every complete frame is
  processed as soon as it is there (after ``step_delay_s`` each) and yields one
  ``Step(step_idx, prs[4], buffered_pcm)``; ``step_idx`` counts this connection's frames from 0
  and ``buffered_pcm`` is what remains buffered after taking the frame. No audio, no steps: like
  the real server, clients keep sending silence to make it advance.
- Words: an :class:`~unmute_trio.testing.speech.EnergyDetector` splits the input into voiced
  segments (≥ 2 consecutive frames with RMS ≥ ``energy_threshold_rms``, ended by > 3 quieter
  frames); segment *i* speaks utterance *i* (cycling) of ``script``. While the segment lasts,
  word *j* starts at ``segment_start + j × word_pace_s`` (if the segment's audio reaches that
  far); when the segment ends, the words not yet placed are spread evenly up to the end of its
  last voiced frame (at least 80 ms each). Like the real model, a word is only emitted once it
  has ended: ``Word(text, start_time)`` (``start_time`` on the input-audio timeline) and then
  ``EndWord(stop_time)`` are sent together with the first Step at which the processed audio is
  ≥ 0.5 s (the model delay) past the word's end — where the next word starts, or, for the last
  word, the end of the segment. So the pause heads react to speech before its first word
  arrives, as they do with a real model.
- Pause heads: with L the silence length at the delayed position (processed audio − 0.5 s),
  measured from the end of the last voiced segment (infinite before any speech),
  ``prs[i] = 0.02 + 0.96 × logistic((L − T_i/2) / (T_i/10))`` for T = 0.5, 1, 2, 3 s: ≈0.02 while
  voiced, 0.5 at half the horizon, ≈0.975 once the silence reaches T_i, 0.98 before speech.
- ``Marker(id)``: echoed right after the Step (and its words) of the first frame that brings the
  processed audio to at least 0.5 s past all the audio received before the marker, i.e. after
  frame number ``ceil((samples_received + 12000) / 1920)`` (7 more frames when the audio so far
  is a whole number of frames). Order within a frame: Step, then Word/EndWord, then Marker.
- ``OggOpus`` is decoded with sphn into the same buffer; undecodable chunks are ignored, as the
  real server logs and ignores them. Text frames are ignored, as in the real server.
- Idle timeout: the stream closes (code 1000) after ``idle_timeout_s`` without any message.

``SttSimulator.connections_log`` holds an :class:`SttConnectionRecord` per connection (newest
last, the last 1000): authorised or not, at capacity, binary messages received, frames
processed, words and markers sent,
and how the stream ended. ``open_connections`` counts handlers currently running.

Deviations from a real moshi-server
- Close frames carry code 1000 (hypercorn cannot send the real server's empty close frame, which
  clients report as 1005). An undecodable message (including ``Init``) or more than 1024 pending
  Markers closes with 1011, where the real server drops the TCP connection.
  :meth:`SttSimulator.kill_connections` closes with 1011 (a dead server would give 1006).
- No keep-alive pings (ASGI cannot send pings); hypercorn still answers client pings.
- A client message is processed as soon as it arrives instead of one message per model step;
  ``step_idx`` is per connection, not the batch loop's global counter.
- ``/api/modules_info``, ``/metrics`` and ``POST /api/asr-streaming`` are not served.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import dataclass, field

import msgpack
import numpy as np
import sphn
import trio
from quart import websocket

from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    Audio,
    Error,
    Marker,
    OggOpus,
    Ready,
    Word,
    decode_stt_client,
    encode,
)
from unmute_trio.testing.sim_base import (
    LOG_LENGTH,
    MoshiSimulator,
    is_authorized,
    run_accepted_stream,
)
from unmute_trio.testing.speech import (
    DEFAULT_STT_SCRIPT,
    PAUSE_HORIZONS_S,
    EnergyDetector,
    SimulatedAsr,
)

log = logging.getLogger(__name__)


@dataclass
class SttSimConfig:
    api_key: str = "public_token"
    capacity: int = 16  # concurrent streams; beyond → Error "no free channels" + close
    script: tuple[str, ...] = DEFAULT_STT_SCRIPT  # utterance i is used for voiced segment i
    step_delay_s: float = 0.0  # artificial processing time per Step
    handshake_delay_s: float = 0.0  # delay before Ready (provokes handshake timeouts)
    word_pace_s: float = 0.3  # spacing of words while a segment is still being spoken
    energy_threshold_rms: float = 0.01  # frame RMS at which audio counts as speech
    idle_timeout_s: float | None = 20.0  # like the real receive loop; None disables


def stt_close_code(end: str) -> int:
    """How an STT stream is closed: normally only after the idle timeout (as moshi-server)."""
    return CloseCode.NORMAL if end == "idle_timeout" else CloseCode.INTERNAL_ERROR


@dataclass
class SttConnectionRecord:
    """What one connection did, for tests (``SttSimulator.connections_log``)."""

    authorized: bool
    at_capacity: bool = False
    frames_processed: int = 0
    binary_messages: int = 0  # Audio, OggOpus and Marker messages received
    words_sent: list[str] = field(default_factory=list)
    markers_echoed: list[int] = field(default_factory=list)
    end: str | None = None  # "client", "idle_timeout", "invalid_message", "killed", ...


class SttSimulator(MoshiSimulator):
    """Serve with ``port = await nursery.start(sim.serve)``; URL ``ws://127.0.0.1:{port}``."""

    def __init__(self, config: SttSimConfig | None = None) -> None:
        self.config = config or SttSimConfig()
        # Newest last; bounded (see LOG_LENGTH).
        self.connections_log: deque[SttConnectionRecord] = deque(maxlen=LOG_LENGTH)
        super().__init__(
            name="stt_simulator",
            capacity=self.config.capacity,
            path="/api/asr-streaming",
            handler=self._asr_streaming,
        )

    async def _asr_streaming(self) -> tuple[str, int] | None:
        with self._connections.connection():
            record = SttConnectionRecord(authorized=is_authorized(self.config.api_key))
            self.connections_log.append(record)
            if not record.authorized:
                record.end = "unauthorized"
                return "", 401  # before accept: hypercorn answers a real HTTP 401
            await run_accepted_stream(
                self._connections,
                record,
                refusal=encode(Error(message="no free channels")),
                run=functools.partial(self._run_stream, record),
                close_code=stt_close_code,
            )
        return None

    async def _run_stream(self, record: SttConnectionRecord) -> str:
        """Ready, then audio in / results out until idle or an invalid message; why it ended."""
        cfg = self.config
        await trio.sleep(cfg.handshake_delay_s)
        await websocket.send(encode(Ready()))
        model = SimulatedAsr(
            cfg.script,
            word_pace_s=cfg.word_pace_s,
            detector=EnergyDetector(cfg.energy_threshold_rms),
        )
        opus = sphn.OpusStreamReader(SAMPLE_RATE)
        idle = math.inf if cfg.idle_timeout_s is None else cfg.idle_timeout_s
        # One scope for the stream instead of a move_on_after per message: its deadline is
        # armed only while waiting for a message, so only that wait can time out.
        with trio.CancelScope() as idle_scope:
            while True:
                idle_scope.deadline = trio.current_time() + idle
                data = await websocket.receive()
                idle_scope.deadline = math.inf
                if not await self._handle_message(data, model, opus, record):
                    return "invalid_message"
        return "idle_timeout"

    async def _handle_message(
        self,
        data: str | bytes,
        model: SimulatedAsr,
        opus: sphn.OpusStreamReader,
        record: SttConnectionRecord,
    ) -> bool:
        """Take one client message and send the results of the frames it completes; False for
        an invalid message (the stream then closes)."""
        cfg = self.config
        if not isinstance(data, bytes):
            return True  # the real server ignores text frames
        record.binary_messages += 1
        try:
            msg = decode_stt_client(data)
            if isinstance(msg, Audio):
                model.push_pcm(msg.pcm)
            elif isinstance(msg, OggOpus):
                model.push_pcm(decode_ogg_chunk(opus, msg.data))
            else:
                model.add_marker(msg.id)
        except (WireFormatError, OverflowError) as e:
            log.info("STT simulator closing a stream: %s", e)
            return False
        while model.has_frame():
            if cfg.step_delay_s > 0:
                await trio.sleep(cfg.step_delay_s)
            step_idx, prs, buffered_pcm, due = model.step_parts()
            await websocket.send(encode_step(step_idx, prs, buffered_pcm))
            for out in due:
                if isinstance(out, Word):
                    record.words_sent.append(out.text)
                elif isinstance(out, Marker):
                    record.markers_echoed.append(out.id)
                await websocket.send(encode(out))
            record.frames_processed = model.frames_processed
        return True


# What encode(Step(...)) writes around the values: a 4-entry map, "type": "Step", then the
# "step_idx" key; the "prs" key (its array: _packed_prs); the "buffered_pcm" key.
_STEP_PREFIX = b"\x84" + msgpack.packb("type") + msgpack.packb("Step") + msgpack.packb("step_idx")
_PRS_KEY = msgpack.packb("prs")
_BUFFERED_KEY = msgpack.packb("buffered_pcm")


@functools.lru_cache(maxsize=4096)
def _packed_prs(prs: tuple[float, ...]) -> bytes:
    """``prs`` as encode() packs it: an array of float 32 items (values rounded as numpy does)."""
    items = np.empty(len(prs), dtype=[("tag", "u1"), ("value", ">f4")])
    items["tag"] = 0xCA
    items["value"] = np.asarray(prs, dtype=np.float32)
    zeros = msgpack.packb([0] * len(prs))  # the array header, then one byte per 0
    return zeros[: len(zeros) - len(prs)] + items.tobytes()


def encode_step(step_idx: int, prs: tuple[float, ...], buffered_pcm: int) -> bytes:
    """``encode(Step(step_idx=..., prs=list(prs), buffered_pcm=...))`` without pydantic: the
    same bytes (tests/test_stt_sim.py checks it), at a fraction of the cost, for the one Step
    per 80 ms frame of every stream."""
    return b"".join(
        (
            _STEP_PREFIX,
            msgpack.packb(step_idx),
            _PRS_KEY,
            _packed_prs(prs),
            _BUFFERED_KEY,
            msgpack.packb(buffered_pcm),
        )
    )


def decode_ogg_chunk(reader: sphn.OpusStreamReader, data: bytes) -> np.ndarray:
    try:
        return np.asarray(reader.append_bytes(data), dtype=np.float32).reshape(-1)
    except ValueError as e:  # not Ogg/Opus: the real server logs and ignores the chunk
        log.info("STT simulator ignoring an undecodable OggOpus chunk: %s", e)
        return np.zeros(0, dtype=np.float32)


__all__ = [
    "DEFAULT_STT_SCRIPT",
    "PAUSE_HORIZONS_S",
    "SimulatedAsr",
    "SttConnectionRecord",
    "SttSimConfig",
    "SttSimulator",
    "encode_step",
    "stt_close_code",
]
