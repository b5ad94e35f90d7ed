"""The streaming logic of the local STT, without I/O or models (sans-I/O, like h11).

Moonshine is not a streaming model, so this turns "VAD probabilities per 32 ms window plus whole
segment transcriptions" into the moshi-server STT stream the session engine expects:

- **Segments.** A voice-activity segment opens after ``min_speech_windows`` windows at or above
  ``speech_threshold`` and closes once the probability has stayed below ``silence_threshold``
  for ``hangover_s``. Its audio starts ``pre_pad_s`` before the first voiced window and ends
  ``post_pad_s`` after the last one. A segment longer than ``max_segment_s`` is cut there (and a
  new one opens if the speech goes on).
- **Decodes.** While a segment is open it is re-decoded whenever ``interim_interval_s`` more
  audio has arrived and no decode is in flight; a word is committed (``Word`` + ``EndWord``)
  once two consecutive decodes agree on it and it is not the last word of the newer one (the
  last word may be cut mid-way). When the segment closes, one final decode commits the rest.
  One decode is in flight at a time, the oldest unfinished segment first.
- **Steps.** One ``Step`` per 1920 input samples (80 ms at 24 kHz). Its four pause heads come
  from the silence since the last voiced window: ``0.02 + 0.96·logistic((L − T/2)/(T/10))`` for
  horizons T = 0.5, 1, 2, 3 s — low while voiced, 0.5 at half of each horizon (the same curve
  as the simulator, so the session's thresholds mean the same). The heads are *semantic* the way
  moshi's are: once the final decode of the last segment reads as a finished sentence (it ends
  in ``. ? !``, not ``...``, and not on a filler such as "um." or "so."), the silence counts
  ``complete_speedup`` times over, so "What is the capital of France?" ends the turn ~0.5 s
  after the voice stops instead of ~1.1 s, while "I would like to know" (Moonshine writes no
  full stop after an unfinished phrase) waits the whole curve. Steps carry the model's delay
  as a promise: the Step whose audio ends at ``q`` is held until every segment that ended
  before ``q − delay_s`` has had its final words sent. That is what makes the session's flush
  (eight silent frames, then wait 0.5 s of STT clock) return the user's last words.
- **Markers.** A marker is echoed after the Step that brings the processed audio to ``delay_s``
  past all the audio received before it, and only once every word of that audio has been sent:
  an open segment is cut at the marker's position so that it waits for one decode, not for
  the user to stop talking.

Times: ``Word.start_time`` / ``EndWord.stop_time`` are seconds on the input-audio timeline.
Moonshine gives no timestamps, so a decode's words are spread over the segment's voiced span
in proportion to their length (documented in docs/local-engines.md).
"""

from __future__ import annotations

import difflib
import math
import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from unmute_trio.protocol.moshi import SAMPLE_RATE, SAMPLES_PER_FRAME, EndWord, Marker, Step, Word

ASR_RATE = 16_000  # Moonshine and the VAD run at 16 kHz
VAD_WINDOW = 512  # samples per VAD probability at 16 kHz (32 ms)
WINDOW_S = VAD_WINDOW / ASR_RATE
PAUSE_HORIZONS_S = (0.5, 1.0, 2.0, 3.0)
# Words that end a phrase without finishing a thought, even when Moonshine writes "Um." or "So."
FILLERS = frozenset(
    {
        "um",
        "uh",
        "uhm",
        "umm",
        "hmm",
        "mm",
        "er",
        "erm",
        "ah",
        "well",
        "so",
        "and",
        "but",
        "or",
        "because",
        "like",
    }
)
# Markers waiting to be echoed; past this the client is misbehaving (the stream is closed).
MAX_PENDING_MARKERS = 1024

Output = Step | Word | EndWord | Marker


@dataclass(frozen=True)
class TranscriberPolicy:
    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    min_speech_windows: int = 2  # 64 ms: a click is not speech
    hangover_s: float = 0.3  # silence that ends a segment; shorter pauses stay inside it
    pre_pad_s: float = 0.2  # Moonshine hears the onset the VAD only noticed late
    post_pad_s: float = 0.15
    max_segment_s: float = 15.0  # decode cost grows with length; Moonshine's limit is ~30 s
    interim_interval_s: float = 0.5
    interim_guard_s: float = 0.4  # interim words ending closer than this to the audio's end wait
    delay_s: float = 0.5  # the moshi STT's text delay, which the session's flush relies on
    # Silence after a finished sentence counts this many times over in the pause heads: with
    # 2.5 the 2 s head passes the session's 0.6 at 0.43 s of silence, that is as soon as the
    # segment's final decode is back (hangover 0.3 s + one decode, ~0.1-0.25 s).
    complete_speedup: float = 2.5


@dataclass(eq=False)
class _Segment:
    start: float  # audio start (seconds, input timeline), including the pre-pad
    opened_at: float  # start of the frame in which the VAD opened it
    speech_start: float
    last_voiced: float  # end of the last voiced window
    audio: list[np.ndarray] = field(default_factory=list)  # 16 kHz chunks
    closed_at: float | None = None  # audio end once closed (including the post-pad)
    finalized: bool = False
    final_requested: bool = False
    committed: list[str] = field(default_factory=list)
    last_interim: list[str] = field(default_factory=list)
    decoded_until: float = 0.0  # audio end of the last decode requested

    @property
    def end(self) -> float:
        return self.closed_at if self.closed_at is not None else self.last_voiced


@dataclass(frozen=True)
class DecodeJob:
    """Audio to transcribe off the event loop; hand the text back to :meth:`decoded`."""

    segment: _Segment
    audio: np.ndarray  # float32, 16 kHz
    final: bool
    speech_start: float
    speech_end: float


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def _spread(words: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """(start, stop) of each word, spread over [start, end] by length: Moonshine gives no
    timestamps, so this is an estimate (at least 80 ms a word)."""
    weights = [len(w) + 1 for w in words]
    total = sum(weights) or 1
    span = max(end - start, 0.08 * len(words))
    times, offset = [], 0
    for weight in weights:
        times.append((start + span * offset / total, start + span * (offset + weight) / total))
        offset += weight
    return times


def reads_finished(text: str) -> bool:
    """Whether a final decode reads as a finished sentence (see the module docstring)."""
    text = text.rstrip().rstrip("\"')”")
    if not text.endswith((".", "?", "!")) or text.endswith(("..", "…")):
        return False
    words = text.split()
    return bool(words) and _norm(words[-1]) not in FILLERS


def _after_committed(committed: list[str], words: list[str]) -> int:
    """Where the words already sent end in a final decode that may disagree with them: just
    after the last final word matched to a sent word (by normalised text), so a word the interim
    decodes got wrong does not swallow the right one that follows it."""
    if not committed:
        return 0
    matcher = difflib.SequenceMatcher(
        a=[_norm(w) for w in committed], b=[_norm(w) for w in words], autojunk=False
    )
    end = 0
    for block in matcher.get_matching_blocks():
        if block.size:
            end = block.b + block.size
    return end if end else min(len(committed), len(words))


class StreamingTranscriber:
    """One STT stream's state. Not thread-safe: the shell calls it from the trio thread only."""

    def __init__(self, policy: TranscriberPolicy | None = None) -> None:
        self.policy = policy or TranscriberPolicy()
        self.samples_received = 0  # 24 kHz samples received, whole frames or not
        self.frames_processed = 0
        self._windows_seen = 0
        self._run = 0  # consecutive windows at/above the speech threshold
        self._below_since: float | None = None
        self._last_voiced: float | None = None  # end of the last voiced window ever
        # _last_voiced when a final decode ending there read as a finished sentence
        self._finished_at: float | None = None
        # Recent 16 kHz audio for the pre-pad: bounded to pre_pad_s + one window.
        self._recent: deque[np.ndarray] = deque()
        self._recent_len = 0
        self._open: _Segment | None = None
        # Closed segments not yet finalized: at most a few (one decode each, in order).
        self._pending: deque[_Segment] = deque()
        self._in_flight: DecodeJob | None = None
        self._held: deque[tuple[float, Output, float | None]] = deque()  # (gate, msg, marker p)
        self._markers: deque[tuple[float, int]] = deque()  # (audio position p, id)
        self._out: list[Output] = []
        self._word_floor = 0.0  # word times never go backwards
        self._cut_for_markers_until = -1.0  # markers up to here have had their segment cut

    # ---------------------------------------------------------------- input

    def add_marker(self, marker_id: int) -> None:
        if len(self._markers) >= MAX_PENDING_MARKERS:
            raise OverflowError(f"more than {MAX_PENDING_MARKERS} markers pending")
        self._markers.append((self.samples_received / SAMPLE_RATE, marker_id))

    def note_received(self, n_samples: int) -> None:
        self.samples_received += n_samples

    def frame(self, probabilities: np.ndarray, pcm16: np.ndarray) -> None:
        """One 1920-sample input frame: its VAD probabilities (windows completed during it, in
        order) and its audio resampled to 16 kHz."""
        position = (self.frames_processed + 1) * SAMPLES_PER_FRAME / SAMPLE_RATE
        self._remember(pcm16)
        for p in probabilities:
            self._window(float(p))
        marker_cut = self._marker_needs_cut(position)
        if self._open is not None:
            self._open.audio.append(pcm16)
            if marker_cut:
                self._close(position)  # a marker wants every word before it
            elif position - self._open.start >= self.policy.max_segment_s:
                self._close(position)
        self.frames_processed += 1
        buffered = self.samples_received - self.frames_processed * SAMPLES_PER_FRAME
        step = Step(
            step_idx=self.frames_processed - 1,
            prs=self._pause_heads(position),
            buffered_pcm=max(0, buffered),
        )
        self._held.append((position, step, None))
        while self._markers and self._markers[0][0] + self.policy.delay_s <= position + 1e-9:
            p, marker_id = self._markers.popleft()
            self._held.append((position, Marker(id=marker_id), p))

    def _marker_needs_cut(self, position: float) -> bool:
        latest = -1.0
        for p, _ in self._markers:  # ascending; only markers not yet echoed (a few)
            if p > position:
                break
            latest = p
        if latest <= self._cut_for_markers_until:
            return False
        self._cut_for_markers_until = latest
        return True

    def _remember(self, pcm16: np.ndarray) -> None:
        self._recent.append(pcm16)
        self._recent_len += len(pcm16)
        keep = round((self.policy.pre_pad_s + 2 * WINDOW_S) * ASR_RATE) + len(pcm16)
        while self._recent_len - len(self._recent[0]) >= keep:
            self._recent_len -= len(self._recent.popleft())

    def _window(self, p: float) -> None:
        pol = self.policy
        self._windows_seen += 1
        end = self._windows_seen * WINDOW_S
        if self._open is None:
            self._run = self._run + 1 if p >= pol.speech_threshold else 0
            if self._run >= pol.min_speech_windows:
                speech_start = end - self._run * WINDOW_S
                self._start(speech_start, end)
            return
        if p >= pol.silence_threshold:
            self._open.last_voiced = end
            self._last_voiced = end
            self._below_since = None
        elif self._below_since is None:
            self._below_since = end - WINDOW_S
        if self._below_since is not None and end - self._below_since >= pol.hangover_s:
            self._close(self._open.last_voiced + pol.post_pad_s)

    def _start(self, speech_start: float, voiced_end: float) -> None:
        # The pre-pad comes from the audio before this frame (this frame's own chunk is added
        # by frame()); the segment starts where that audio starts.
        frame_start = self.frames_processed * SAMPLES_PER_FRAME / SAMPLE_RATE
        wanted = max(0.0, min(speech_start - self.policy.pre_pad_s, frame_start))
        before = list(self._recent)[:-1]
        pad = np.concatenate(before) if before else np.zeros(0, np.float32)
        pad = pad[len(pad) - min(len(pad), round((frame_start - wanted) * ASR_RATE)) :]
        start = frame_start - len(pad) / ASR_RATE
        seg = _Segment(
            start=start, opened_at=frame_start, speech_start=speech_start, last_voiced=voiced_end
        )
        if len(pad):
            seg.audio.append(pad)
        seg.decoded_until = start
        self._open = seg
        self._last_voiced = voiced_end
        self._below_since = None
        self._run = 0

    def _close(self, audio_end: float) -> None:
        seg = self._open
        assert seg is not None
        seg.closed_at = max(audio_end, seg.last_voiced)
        self._open = None
        self._below_since = None
        self._run = 0
        self._pending.append(seg)

    # ---------------------------------------------------------------- decoding

    def next_decode(self) -> DecodeJob | None:
        """The next decode to run, or ``None`` (one in flight at a time)."""
        if self._in_flight is not None:
            return None
        job: DecodeJob | None = None
        if self._pending:
            seg = self._pending[0]
            seg.final_requested = True
            job = self._job(seg, final=True)
        elif self._open is not None:
            seg = self._open
            grown = seg.last_voiced - seg.decoded_until
            if grown >= self.policy.interim_interval_s:
                job = self._job(seg, final=False)
        self._in_flight = job
        return job

    def _job(self, seg: _Segment, *, final: bool) -> DecodeJob:
        audio = np.concatenate(seg.audio) if seg.audio else np.zeros(0, np.float32)
        if final:
            n = round((seg.end - seg.start) * ASR_RATE)
            audio = audio[:n]
        seg.decoded_until = seg.start + len(audio) / ASR_RATE
        return DecodeJob(seg, audio, final, seg.speech_start, seg.last_voiced)

    def decoded(self, job: DecodeJob, text: str) -> None:
        """The text of ``job``: commit the words that are now certain."""
        assert job is self._in_flight
        self._in_flight = None
        seg = job.segment
        words = text.split()
        times = _spread(words, job.speech_start, job.speech_end)
        if job.final:
            first = _after_committed(seg.committed, words)
        else:
            # Local agreement: a word two consecutive decodes agree on, that is not the newest
            # decode's last word and that ended well before the decoded audio does (a word the
            # audio cuts mid-way is often agreed on wrongly: "does the" for "does the ph…").
            agreed = 0
            limit = min(len(words) - 1, len(seg.last_interim))
            while agreed < limit and _norm(words[agreed]) == _norm(seg.last_interim[agreed]):
                agreed += 1
            while agreed and times[agreed - 1][1] > job.speech_end - self.policy.interim_guard_s:
                agreed -= 1
            seg.last_interim = words
            first = len(seg.committed) if agreed > len(seg.committed) else len(words)
            words, times = words[:agreed], times[:agreed]
        for word, (start, stop) in zip(words[first:], times[first:], strict=True):
            start = max(start, self._word_floor)
            stop = max(stop, start)
            self._word_floor = stop
            self._out.append(Word(text=word, start_time=start))
            self._out.append(EndWord(stop_time=stop))
            seg.committed.append(word)
        if job.final:
            if reads_finished(text):
                self._finished_at = seg.last_voiced
            seg.finalized = True
            assert self._pending and self._pending[0] is seg
            self._pending.popleft()

    # ---------------------------------------------------------------- output

    def drain(self) -> list[Output]:
        """Messages ready to send, in order."""
        out, self._out = self._out, []
        while self._held:
            gate, msg, marker_at = self._held[0]
            if self._blocked(gate, marker_at):
                break
            out.append(msg)
            self._held.popleft()
        return out

    @property
    def held(self) -> int:
        """Messages held back waiting for a decode (the shell bounds how far it reads ahead)."""
        return len(self._held)

    def _blocked(self, gate: float, marker_at: float | None) -> bool:
        delay = self.policy.delay_s
        for seg in self._pending:  # closed, not finalized
            if marker_at is not None:
                if seg.opened_at < marker_at:
                    return True
            elif seg.end + delay <= gate + 1e-9:
                return True
        return False

    def _pause_heads(self, position: float) -> list[float]:
        if self._open is not None and self._below_since is None:
            silence = 0.0
        elif self._last_voiced is None:
            silence = math.inf
        else:
            silence = max(0.0, position - self._last_voiced)
            if self._open is None and self._finished_at == self._last_voiced:
                silence *= self.policy.complete_speedup
        heads = []
        for horizon in PAUSE_HORIZONS_S:
            z = max(-50.0, min(50.0, (silence - horizon / 2) / (horizon / 10)))
            heads.append(0.02 + 0.96 / (1.0 + math.exp(-z)))
        return heads
