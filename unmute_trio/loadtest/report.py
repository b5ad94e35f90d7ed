"""The load test's results: per-turn timings, per-conversation results, the whole report, and
the summary statistics of each latency series. Pydantic models, so a report is one JSON file.

Latency definitions (the original's load test, docs/benchmarks.md, plus our own):

- ``stt_latency``: first user transcription delta − start of the user's audio;
- ``vad_latency``: ``response.created`` − end of the user's audio;
- ``llm_latency``: first ``unmute.response.text.delta.ready`` − ``response.created``;
- ``tts_start_latency``: first ``response.audio.delta`` − first text delta ready;
- ``tts_realtime_factor``: seconds of bot audio received ÷ (``response.audio.done`` − first
  audio delta);
- ``voice_to_voice``: first bot audio frame − end of the user's audio;
- ``backend_added``: ``voice_to_voice`` − the simulators' designed latency (``floor_s``, see
  :mod:`unmute_trio.loadtest.floor`), only when the services are the simulators; split at
  ``input_audio_buffer.speech_stopped`` into ``pause_added`` (end of user audio → pause
  announced, minus the designed pause-detection delay) and ``reply_added`` (pause announced →
  first audio frame, minus the designed LLM and TTS lead time);
- ``audio_gap``: time between consecutive ``response.audio.delta`` events of one reply;
- late frames: a frame is late when it arrives after the browser needs it, that is after the
  first frame's arrival plus the duration of all audio before it in that reply.

Times inside a :class:`TurnTiming` are seconds since its conversation connected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field, computed_field

LATENCY_SERIES = (
    "stt_latency",
    "vad_latency",
    "llm_latency",
    "tts_start_latency",
    "tts_realtime_factor",
    "voice_to_voice",
    "backend_added",
    "pause_added",
    "reply_added",
)


def _difference(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return later - earlier


class TurnTiming(BaseModel):
    """One bot reply (index 0 is the greeting) and the user speech before it."""

    index: int
    user_audio_start: float | None = None
    user_audio_end: float | None = None
    first_transcript: float | None = None
    speech_stopped: float | None = None
    response_created: float | None = None
    first_text_ready: float | None = None
    first_audio: float | None = None
    audio_done: float | None = None
    audio_s: float = 0.0
    frames: int = 0
    late_frames: int = 0
    max_lateness_s: float = 0.0
    audio_gaps_s: list[float] = Field(default_factory=list)
    user_text: str = ""
    reply_text: str = ""
    # The simulators' designed latency (see ``floor``): pause detection, and from the pause to
    # the first audio frame (LLM time to first token, token gaps, TTS lookahead).
    pause_floor_s: float | None = None
    reply_floor_s: float | None = None

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def stt_latency(self) -> float | None:
        return _difference(self.first_transcript, self.user_audio_start)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def vad_latency(self) -> float | None:
        return _difference(self.response_created, self.user_audio_end)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def llm_latency(self) -> float | None:
        return _difference(self.first_text_ready, self.response_created)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def tts_start_latency(self) -> float | None:
        return _difference(self.first_audio, self.first_text_ready)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def tts_realtime_factor(self) -> float | None:
        duration = _difference(self.audio_done, self.first_audio)
        if duration is None or duration <= 0:
            return None
        return self.audio_s / duration

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def voice_to_voice(self) -> float | None:
        return _difference(self.first_audio, self.user_audio_end)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def floor_s(self) -> float | None:
        if self.pause_floor_s is None or self.reply_floor_s is None:
            return None
        return self.pause_floor_s + self.reply_floor_s

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def backend_added(self) -> float | None:
        return _difference(self.voice_to_voice, self.floor_s)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def pause_added(self) -> float | None:
        """The part of ``backend_added`` before the server announced the pause."""
        detected = _difference(self.speech_stopped, self.user_audio_end)
        return _difference(detected, self.pause_floor_s)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def reply_added(self) -> float | None:
        """The part of ``backend_added`` after it: STT flush, LLM, TTS, pacing, writer."""
        return _difference(_difference(self.first_audio, self.speech_stopped), self.reply_floor_s)


class ConversationResult(BaseModel):
    index: int
    user: int
    started_at_unix: float
    duration_s: float
    ok: bool
    error: str | None = None
    close_code: int | None = None
    turns: list[TurnTiming] = Field(default_factory=list)
    server_errors: list[str] = Field(default_factory=list)  # "error" events (warnings too)
    max_send_lag_s: float = 0.0  # how far the generator's audio pacing fell behind
    pages_sent: int = 0
    events_received: int = 0


class SeriesSummary(BaseModel):
    count: int
    mean: float | None
    median: float | None
    p90: float | None
    p99: float | None
    max: float | None


def summarize(values: Iterable[float]) -> SeriesSummary:
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(data) == 0:
        return SeriesSummary(count=0, mean=None, median=None, p90=None, p99=None, max=None)
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return SeriesSummary(
        count=len(data),
        mean=float(data.mean()),
        median=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(data.max()),
    )


class LoadTestReport(BaseModel):
    url: str
    started_at_unix: float
    wall_s: float
    interrupted: bool = False  # Ctrl-C: the results are partial
    settings: dict[str, object] = Field(default_factory=dict)
    conversations: list[ConversationResult] = Field(default_factory=list)

    def turns(self, *, replies_only: bool = False) -> list[TurnTiming]:
        """Every completed turn, including those of conversations that failed later."""
        return [
            t
            for c in self.conversations
            for t in c.turns
            if t.audio_done is not None and (t.index > 0 or not replies_only)
        ]

    def concurrency(self) -> tuple[int, float]:
        """Peak and time-weighted mean number of conversations open at once."""
        edges = sorted(
            [(c.started_at_unix, 1) for c in self.conversations]
            + [(c.started_at_unix + c.duration_s, -1) for c in self.conversations]
        )
        if not edges:
            return 0, 0.0
        open_now = peak = 0
        area = 0.0
        for (at, step), (next_at, _) in zip(edges, [*edges[1:], edges[-1]], strict=True):
            open_now += step
            peak = max(peak, open_now)
            area += open_now * (next_at - at)
        span = edges[-1][0] - edges[0][0]
        return peak, area / span if span > 0 else 0.0

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def ok_fraction(self) -> float | None:
        if not self.conversations:
            return None
        return sum(c.ok for c in self.conversations) / len(self.conversations)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def errors(self) -> list[str]:
        return [f"conversation {c.index}: {c.error}" for c in self.conversations if not c.ok]

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def summary(self) -> dict[str, SeriesSummary]:
        turns = self.turns()
        series = {name: summarize(getattr(t, name) for t in turns) for name in LATENCY_SERIES}
        series["audio_gap"] = summarize(g for t in turns for g in t.audio_gaps_s)
        series["frame_lateness"] = summarize(t.max_lateness_s for t in turns if t.late_frames)
        return series

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def frames(self) -> int:
        return sum(t.frames for t in self.turns())

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def late_frames(self) -> int:
        return sum(t.late_frames for t in self.turns())

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def max_send_lag_s(self) -> float:
        return max((c.max_send_lag_s for c in self.conversations), default=0.0)


def merge_reports(reports: Sequence[LoadTestReport]) -> LoadTestReport:
    """One report from several (e.g. one per load-generator process); conversations are
    renumbered in order of their start."""
    if not reports:
        raise ValueError("nothing to merge")
    start = min(r.started_at_unix for r in reports)
    end = max(r.started_at_unix + r.wall_s for r in reports)
    conversations = sorted(
        (c for r in reports for c in r.conversations), key=lambda c: c.started_at_unix
    )
    renumbered = [c.model_copy(update={"index": i}) for i, c in enumerate(conversations)]
    return LoadTestReport(
        url=reports[0].url,
        started_at_unix=start,
        wall_s=end - start,
        interrupted=any(r.interrupted for r in reports),
        settings={**reports[0].settings, "merged_reports": len(reports)},
        conversations=renumbered,
    )


def load_report(text: str) -> LoadTestReport:
    """Parse a report written by ``model_dump_json`` (computed fields are recomputed)."""
    return LoadTestReport.model_validate_json(text)
