"""Synthetic speech for simulators, load generators and end-to-end tests, and the deterministic
"model" of the STT simulator. Pure numpy: no I/O, no clock, no global random state.

- :func:`speech_like` makes a voiced, syllable-modulated signal that any energy-based detector
  (and Opus) treats as speech: harmonics of a slowly gliding pitch under a ~4 Hz envelope that
  never drops to zero, so a whole utterance reads as one voiced segment.
- :func:`silence` is digital silence.
- :class:`EnergyDetector` decides voiced / unvoiced per 1920-sample frame (80 ms, one STT model
  step) from the frame's RMS, with an onset requirement (a single click is not speech) and a
  hangover (a short dip does not end the segment).
- :class:`SimulatedAsr` turns a stream of audio into the STT messages of one connection (Step,
  Word, EndWord, Marker) as a pure function of the samples; ``stt_sim`` documents its rules.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np

from unmute_trio.protocol.moshi import (
    FRAME_TIME_S,
    SAMPLES_PER_FRAME,
    STT_DELAY_S,
    EndWord,
    Marker,
    Step,
    Word,
)

SAMPLE_RATE = 24_000
FRAME_SIZE = SAMPLES_PER_FRAME  # one STT/TTS model step, 80 ms at 24 kHz

_N_HARMONICS = 10
_PEAK = 0.4  # loud enough to be unmistakably voiced, far from clipping after Opus
_FADE_S = 0.01  # short raised-cosine edges so concatenated pieces do not click


def speech_like(duration_s: float, *, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``duration_s`` seconds of a speech-like float32 signal with peak ``0.4``.

    A harmonic series (1/k amplitudes) on a fundamental of 110-190 Hz that glides by ±12 %,
    multiplied by a syllable envelope at 3.5-4.5 Hz that stays within [0.35, 1], plus a little
    breath noise. ``seed`` picks pitch, rates and phases, so equal seeds give equal samples.
    """
    n = max(0, round(duration_s * sample_rate))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / sample_rate
    f0_base = rng.uniform(110.0, 190.0)
    glide_hz = rng.uniform(0.3, 1.2)
    f0 = f0_base * (1.0 + 0.12 * np.sin(2 * math.pi * glide_hz * t + rng.uniform(0, 2 * math.pi)))
    phase = 2 * math.pi * np.cumsum(f0) / sample_rate
    harmonic_phases = rng.uniform(0, 2 * math.pi, size=_N_HARMONICS)
    voiced = np.zeros(n, dtype=np.float64)
    for k in range(1, _N_HARMONICS + 1):
        voiced += np.sin(k * phase + harmonic_phases[k - 1]) / k
    syllable_hz = rng.uniform(3.5, 4.5)
    envelope = 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * math.pi * syllable_hz * t + rng.uniform(0, 6)))
    signal = envelope * (voiced + 0.05 * rng.standard_normal(n))
    signal *= _PEAK / max(float(np.max(np.abs(signal))), 1e-9)
    fade = min(n // 2, round(_FADE_S * sample_rate))
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    return signal.astype(np.float32)


def silence(duration_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``duration_s`` seconds of float32 zeros."""
    return np.zeros(max(0, round(duration_s * sample_rate)), dtype=np.float32)


class EnergyDetector:
    """Streaming voiced/unvoiced decision, one call per frame.

    A frame is *energetic* when its RMS is at least ``threshold_rms`` (default 0.01, -40 dBFS:
    far above Opus-coded digital silence, far below :func:`speech_like`). A segment starts once
    ``onset_frames`` consecutive frames are energetic (it is dated back to the first of them) and
    ends once more than ``hangover_frames`` frames have passed since the last energetic one.

    After each :meth:`push`, ``segment_start_frame`` / ``last_energetic_frame`` describe the
    current (or most recent) segment, in frame indices counted from 0.
    """

    def __init__(
        self,
        threshold_rms: float = 0.01,
        *,
        onset_frames: int = 2,
        hangover_frames: int = 3,
        frame_size: int = FRAME_SIZE,
    ) -> None:
        if onset_frames < 1 or hangover_frames < 0:
            raise ValueError("onset_frames must be >= 1 and hangover_frames >= 0")
        self.threshold_rms = threshold_rms
        self.onset_frames = onset_frames
        self.hangover_frames = hangover_frames
        self.frame_size = frame_size
        self.frames_seen = 0
        self.voiced = False
        self.segment_start_frame: int | None = None
        self.last_energetic_frame: int | None = None
        self._energetic_run = 0

    def push(self, frame: np.ndarray) -> bool:
        """Account for one frame; return whether the stream is inside a voiced segment."""
        if len(frame) != self.frame_size:
            raise ValueError(f"expected {self.frame_size} samples, got {len(frame)}")
        index = self.frames_seen
        self.frames_seen += 1
        # np.mean without its Python wrapper: the same pairwise sum divided by the count.
        rms = math.sqrt(float(np.add.reduce(np.square(frame, dtype=np.float64))) / len(frame))
        energetic = rms >= self.threshold_rms
        self._energetic_run = self._energetic_run + 1 if energetic else 0
        if self.voiced:
            if energetic:
                self.last_energetic_frame = index
            else:
                assert self.last_energetic_frame is not None
                if index - self.last_energetic_frame > self.hangover_frames:
                    self.voiced = False
        elif self._energetic_run >= self.onset_frames:
            self.voiced = True
            self.segment_start_frame = index - self.onset_frames + 1
            self.last_energetic_frame = index
        return self.voiced


# ------------------------------------------------------------------ the STT simulator's model

DEFAULT_STT_SCRIPT: tuple[str, ...] = (
    "Hello, how are you today?",
    "Can you tell me a fun fact about the ocean?",
    "That is interesting, tell me more.",
    "Thanks, goodbye!",
)
PAUSE_HORIZONS_S = (0.5, 1.0, 2.0, 3.0)
_DELAY_SAMPLES = round(STT_DELAY_S * SAMPLE_RATE)
_EPS = 1e-9  # float slack when comparing times built from frame counts
# A client may queue markers faster than audio lets them be echoed; past this many pending
# markers the stream is closed rather than growing without limit (the real server never needs
# more than a handful: each is echoed ~7 frames later).
MAX_PENDING_MARKERS = 1024


class SimulatedAsr:
    """The deterministic stand-in for one stream of the stt-1b model (pure, no I/O).

    Feed audio with :meth:`push_pcm`, queue markers with :meth:`add_marker`, then call
    :meth:`step` while :meth:`has_frame`; each step returns the messages of one frame.
    """

    def __init__(
        self,
        script: tuple[str, ...] = DEFAULT_STT_SCRIPT,
        *,
        word_pace_s: float = 0.3,
        detector: EnergyDetector | None = None,
    ) -> None:
        self._script = script
        self._pace = word_pace_s
        self._detector = detector or EnergyDetector()
        # Audio not yet stepped. Bounded by one client message plus < 1 frame: the server shell
        # steps every complete frame before it reads the next message.
        self._buffer = np.zeros(0, dtype=np.float32)
        self.samples_received = 0
        self.frames_processed = 0
        self._segments_seen = 0
        # [start, end of last voiced frame] of recent segments, for the pause heads. The delayed
        # position trails by 0.5 s and a segment plus its gap spans ≥ 6 frames, so 4 is plenty.
        self._segments: deque[list[float]] = deque(maxlen=4)
        self._words: list[str] = []
        self._next_word = 0
        # The word being spoken: like the real model, its Word message is only emitted once the
        # word has ended (at the next word boundary or the end of the segment), then delayed.
        self._held_word: Word | None = None
        self._open_word = False  # a word was placed whose Word/EndWord are not yet scheduled
        self._time_floor = 0.0  # scheduled times never go backwards
        # Word/EndWord waiting for the 0.5 s delay: at most the words of one utterance plus
        # their EndWords, since placement runs at most one segment ahead of emission.
        self._scheduled: deque[tuple[float, Word | EndWord]] = deque()
        self._markers: deque[tuple[int, int]] = deque()  # (frame count due, id), due ascending

    @property
    def buffered_samples(self) -> int:
        return len(self._buffer)

    def push_pcm(self, pcm: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, pcm.astype(np.float32, copy=False)])
        self.samples_received += len(pcm)

    def has_frame(self) -> bool:
        return len(self._buffer) >= SAMPLES_PER_FRAME

    def add_marker(self, marker_id: int) -> None:
        if len(self._markers) >= MAX_PENDING_MARKERS:
            raise OverflowError(f"more than {MAX_PENDING_MARKERS} markers pending")
        due = -(-(self.samples_received + _DELAY_SAMPLES) // SAMPLES_PER_FRAME)
        self._markers.append((due, marker_id))

    def step(self) -> list[Step | Word | EndWord | Marker]:
        """Process one frame: its Step, then the words and markers that became due."""
        index, prs, buffered, due = self.step_parts()
        return [Step(step_idx=index, prs=list(prs), buffered_pcm=buffered), *due]

    def step_parts(self) -> tuple[int, tuple[float, ...], int, list[Word | EndWord | Marker]]:
        """:meth:`step` without building the Step: its ``step_idx``, ``prs`` and
        ``buffered_pcm``, then the words and markers that became due. The STT simulator packs
        the Step straight from these (one per frame per session), skipping pydantic."""
        frame = self._buffer[:SAMPLES_PER_FRAME]
        self._buffer = self._buffer[SAMPLES_PER_FRAME:]
        index = self.frames_processed
        self.frames_processed += 1
        position = self.frames_processed * FRAME_TIME_S  # seconds of input processed
        det = self._detector
        was_voiced = det.voiced
        voiced = det.push(frame)
        if voiced:
            assert det.last_energetic_frame is not None
            voiced_until = (det.last_energetic_frame + 1) * FRAME_TIME_S
            if not was_voiced:
                self._start_segment(voiced_until)
            self._segments[-1][1] = voiced_until
            self._place_paced_words(min(position, voiced_until))
        elif was_voiced:
            self._end_segment(self._segments[-1][1])
        delayed = position - STT_DELAY_S
        prs = _pause_heads_after(self._silence_at(delayed))
        out: list[Word | EndWord | Marker] = []
        while self._scheduled and self._scheduled[0][0] <= delayed + _EPS:
            out.append(self._scheduled.popleft()[1])
        while self._markers and self._markers[0][0] <= self.frames_processed:
            out.append(Marker(id=self._markers.popleft()[1]))
        return index, prs, len(self._buffer), out

    # ---------------------------------------------------------------- words

    def _start_segment(self, voiced_until: float) -> None:
        assert self._detector.segment_start_frame is not None
        start = self._detector.segment_start_frame * FRAME_TIME_S
        self._segments.append([start, voiced_until])
        utterance = self._script[self._segments_seen % len(self._script)] if self._script else ""
        self._segments_seen += 1
        self._words = utterance.split()
        self._next_word = 0

    def _place_paced_words(self, reached: float) -> None:
        start = self._segments[-1][0]
        while self._next_word < len(self._words):
            at = start + self._next_word * self._pace
            if at >= reached - _EPS:
                return
            self._place_word(at)

    def _end_segment(self, voiced_until: float) -> None:
        remaining = len(self._words) - self._next_word
        if remaining:
            first = max(self._segments[-1][0], self._time_floor)
            if self._open_word:
                first = self._time_floor + FRAME_TIME_S
            last = max(voiced_until, first + FRAME_TIME_S * remaining)
            for j in range(remaining):
                self._place_word(first + j * (last - first) / remaining)
            voiced_until = last
        if self._open_word:
            stop = max(voiced_until, self._time_floor + FRAME_TIME_S)
            assert self._held_word is not None
            self._scheduled.append((stop, self._held_word))
            self._scheduled.append((stop, EndWord(stop_time=stop)))
            self._held_word = None
            self._time_floor = stop
            self._open_word = False
        self._words = []

    def _place_word(self, at: float) -> None:
        at = max(at, self._time_floor)
        if self._open_word:
            assert self._held_word is not None
            self._scheduled.append((at, self._held_word))
            self._scheduled.append((at, EndWord(stop_time=at)))
        self._held_word = Word(text=self._words[self._next_word], start_time=at)
        self._next_word += 1
        self._open_word = True
        self._time_floor = at

    # ---------------------------------------------------------------- pause heads

    def _silence_at(self, t: float) -> float:
        for start, end in reversed(self._segments):
            if start <= t + _EPS:
                return 0.0 if t < end else t - end
        return math.inf  # nothing spoken before t: silence since the stream began


@functools.lru_cache(maxsize=4096)
def _pause_heads_after(silence_s: float) -> tuple[float, ...]:
    """The pause heads after ``silence_s`` seconds of silence. Cached: a stream mostly sees the
    same few values (infinite before speech, 0 while voiced, whole frames of silence after)."""
    heads = []
    for horizon in PAUSE_HORIZONS_S:
        z = max(-50.0, min(50.0, (silence_s - horizon / 2) / (horizon / 10)))
        heads.append(0.02 + 0.96 / (1.0 + math.exp(-z)))
    return tuple(heads)
