"""Where the time of a reply's start goes, turn by turn, in a ``bench/capacity.py`` run.

    .venv/bin/python bench/turn_starts.py /tmp/unmute-capacity-XXXX [--stage 30]

Reads the load generators' reports of each stage (``stageN-*.json`` in the run's log
directory, printed at the top of a capacity run) and splits the time from the user's end of
speech (``input_audio_buffer.speech_stopped``) to the first bot audio into three parts:

- **flush**: ``speech_stopped`` → ``response.created`` (the server flushes the STT and builds the
  request; by design a few milliseconds);
- **llm**: ``response.created`` → the first word ready (``unmute.response.text.delta.ready``);
  the simulated LLM's designed time to first token is part of it;
- **tts**: the first word → the first audio delta; the simulated TTS's designed latency is part
  of it.

Each reply is put in a bucket by how many replies of the stage started within ±0.5 s of it
(a burst of turn starts), then by the CPU use of the server, and of the busier of the two
simulator processes, during the reply's first second (``cpu-stageN.json``, written by the
capacity run second by second). Prints medians, 90th percentiles and maxima in milliseconds.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
from collections import defaultdict
from pathlib import Path

PARTS = ("flush", "llm", "tts", "reply")
BURST_WINDOW_S = 0.5


def replies(stage_files: list[Path]) -> list[dict[str, float]]:
    rows = []
    for path in stage_files:
        report = json.loads(path.read_text())
        for conversation in report["conversations"]:
            t0 = conversation["started_at_unix"]
            for turn in conversation["turns"]:
                needed = ("speech_stopped", "response_created", "first_text_ready", "first_audio")
                if any(turn.get(key) is None for key in needed):
                    continue
                rows.append(
                    {
                        "start_unix": t0 + turn["speech_stopped"],
                        "flush": turn["response_created"] - turn["speech_stopped"],
                        "llm": turn["first_text_ready"] - turn["response_created"],
                        "tts": turn["first_audio"] - turn["first_text_ready"],
                        "reply": turn["first_audio"] - turn["speech_stopped"],
                    }
                )
    starts = sorted(row["start_unix"] for row in rows)
    for row in rows:
        low = bisect.bisect_left(starts, row["start_unix"] - BURST_WINDOW_S)
        high = bisect.bisect_right(starts, row["start_unix"] + BURST_WINDOW_S)
        row["burst"] = high - low  # itself included
    return rows


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, rows: list[dict[str, float]]) -> str:
    cells = []
    for part in PARTS:
        values = [1000 * row[part] for row in rows]
        cells.append(
            f"{part} {statistics.median(values):5.0f} / {quantile(values, 0.9):5.0f} / "
            f"{max(values):5.0f}"
        )
    return f"{label:<26} n={len(rows):4d}  " + "   ".join(cells)


def cpu_during(series: list[list[float]], t: float) -> float | None:
    """Mean CPU % of the one-second windows that end within the second after ``t`` (a series
    of [unix time at the end of the window, %])."""
    window = [pct for when, pct in series if t <= when <= t + 1.0]
    return statistics.fmean(window) if window else None


def cpu_buckets(
    rows: list[dict[str, float]], series: list[list[float]], label: str
) -> dict[str, list[dict[str, float]]]:
    buckets: dict[str, list[dict[str, float]]] = defaultdict(list)
    for row in rows:
        pct = cpu_during(series, row["start_unix"])
        if pct is not None:
            low = min(int(pct // 20) * 20, 80)
            buckets[f"{label} {low}-{low + 20} %"].append(row)
    return buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", type=Path, help="the capacity run's log directory")
    parser.add_argument("--stage", type=int, help="only this many sessions")
    args = parser.parse_args()
    by_stage: dict[int, list[Path]] = defaultdict(list)
    for path in sorted(args.logs.glob("stage*-*.json")):
        sessions = int(path.name[len("stage") :].split("-")[0])
        if args.stage is None or sessions == args.stage:
            by_stage[sessions].append(path)
    print("milliseconds: median / p90 / max")
    for sessions, files in sorted(by_stage.items()):
        rows = replies(files)
        if not rows:
            continue
        print(f"\n{sessions} sessions, {len(rows)} replies")
        print(line("all", rows))
        buckets: dict[str, list[dict[str, float]]] = defaultdict(list)
        for row in rows:
            burst = int(row["burst"])
            label = "alone" if burst == 1 else f"{min(burst, 10)}{'+' if burst >= 10 else ''}"
            buckets[label].append(row)
        for label in sorted(buckets, key=lambda b: (b != "alone", b.rstrip("+").zfill(3))):
            print(line(f"starts within ±0.5 s: {label}", buckets[label]))
        cpu_file = args.logs / f"cpu-stage{sessions}.json"
        if not cpu_file.exists():
            continue
        cpu = json.loads(cpu_file.read_text())
        sims = [
            [when, max(a, b)]
            for (when, a), (_, b) in zip(cpu["sims_stt"], cpu["sims_tts_llm"], strict=False)
        ]
        for label, series in (("server CPU", cpu["server"]), ("busier sim CPU", sims)):
            buckets = cpu_buckets(rows, series, label)
            for bucket in sorted(buckets):
                print(line(bucket, buckets[bucket]))


if __name__ == "__main__":
    main()
