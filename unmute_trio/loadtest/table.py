"""Human-readable output of a load test: the summary table and an optional histogram PNG."""

from __future__ import annotations

from pathlib import Path

from unmute_trio.loadtest.report import LoadTestReport, SeriesSummary

# (series, label, unit scale): latencies in milliseconds, the real-time factor as is.
_ROWS = (
    ("stt_latency", "STT latency (ms)", 1000.0),
    ("vad_latency", "VAD latency (ms)", 1000.0),
    ("llm_latency", "LLM latency (ms)", 1000.0),
    ("tts_start_latency", "TTS start (ms)", 1000.0),
    ("tts_realtime_factor", "TTS real-time factor", 1.0),
    ("voice_to_voice", "voice-to-voice (ms)", 1000.0),
    ("backend_added", "backend-added (ms)", 1000.0),
    ("pause_added", "  until pause seen (ms)", 1000.0),
    ("reply_added", "  pause to audio (ms)", 1000.0),
    ("audio_gap", "audio delta gap (ms)", 1000.0),
    ("frame_lateness", "late frames: lateness (ms)", 1000.0),
)
_COLUMNS = ("count", "mean", "median", "p90", "p99", "max")


def _cell(value: float | None, scale: float) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.1f}" if scale != 1.0 else f"{value:.3f}"


def format_summary(report: LoadTestReport) -> str:
    """The summary table, then OK fraction, frame counts, generator lag and errors."""
    summary = report.summary
    width = max(len(label) for _, label, _ in _ROWS)
    lines = [f"{'metric':<{width}} " + " ".join(f"{c:>8}" for c in _COLUMNS)]
    for name, label, scale in _ROWS:
        s: SeriesSummary = summary[name]
        if s.count == 0 and name in (
            "backend_added",
            "pause_added",
            "reply_added",
            "frame_lateness",
        ):
            continue  # not measured (no simulators) or nothing late: no empty row
        cells = [f"{s.count:>8}"] + [
            f"{_cell(getattr(s, c), scale):>8}" for c in _COLUMNS if c != "count"
        ]
        lines.append(f"{label:<{width}} " + " ".join(cells))
    n = len(report.conversations)
    ok = sum(c.ok for c in report.conversations)
    fraction = "-" if report.ok_fraction is None else f"{report.ok_fraction:.2f}"
    lines.append("")
    lines.append(
        f"OK fraction {fraction} ({ok}/{n} conversations), {len(report.turns())} turns, "
        f"{report.late_frames} late frames of {report.frames}, "
        f"generator pacing lag max {report.max_send_lag_s * 1000:.1f} ms"
        + (" (INTERRUPTED: partial results)" if report.interrupted else "")
    )
    for error in report.errors[:20]:
        lines.append(f"error: {error}")
    if len(report.errors) > 20:
        lines.append(f"... and {len(report.errors) - 20} more errors (see the JSON report)")
    return "\n".join(lines)


def write_histogram(report: LoadTestReport, path: Path) -> str | None:
    """Write a latency histogram PNG; return why not (matplotlib missing), or None if written.

    matplotlib is optional and not a dependency of the project.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no histogram written (pip install matplotlib)"
    turns = report.turns()
    series = [
        (label, [getattr(t, name) * 1000 for t in turns if getattr(t, name) is not None])
        for name, label in (
            ("voice_to_voice", "voice-to-voice (ms)"),
            ("backend_added", "backend-added (ms)"),
            ("llm_latency", "LLM latency (ms)"),
            ("tts_start_latency", "TTS start (ms)"),
        )
    ]
    series = [(label, values) for label, values in series if values]
    if not series:
        return "no completed turn: no histogram written"
    figure, axes = plt.subplots(len(series), 1, figsize=(8, 2.5 * len(series)), squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], series, strict=True):
        ax.hist(values, bins=40)
        ax.set_xlabel(label)
        ax.set_ylabel("turns")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return None
