"""Figures for benchmarks: processes and the machine (from Linux's /proc), the Opus codec's
cost per frame, CPU pinning, and a py-spy profile summary. Used by ``bench/capacity.py``;
Linux only."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sphn

from unmute_trio.testing.speech import speech_like

CLK_TCK = os.sysconf("SC_CLK_TCK")
_LINE_NUMBER = re.compile(r":\d+\)$")  # py-spy frames: "function (file.py:123)"


def machine() -> dict[str, object]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = _kib_field(Path("/proc/meminfo").read_text(), "MemTotal")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def cpu_seconds(pid: int) -> float:
    # /proc/<pid>/stat: the command name (field 2) may hold spaces, so split after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return _kib_field(status, "VmRSS") / 1024


def _kib_field(text: str, name: str) -> int:
    """The value of a ``Name:   1234 kB`` line of /proc/meminfo or /proc/<pid>/status."""
    match = re.search(rf"{name}:\s+(\d+)", text)
    if match is None:
        raise ValueError(f"no {name} line in /proc")  # e.g. VmRSS of a zombie process
    return int(match.group(1))


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (the busy fields of /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK  # user nice system idle iowait irq softirq steal


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server (not a dependency: ``pip install py-spy`` to use it)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    command = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(
        [*command, "--rate", "100", "--nonblocking", "--duration", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """Share of the server's busy samples per function: own time, and time below it."""
    own: dict[str, int] = {}
    below: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_LINE_NUMBER.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            below[frame] = below.get(frame, 0) + n
    lines = [f"{total} samples; own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}% {frame}")
    lines.append("including callees:")
    for frame, n in sorted(below.items(), key=lambda kv: -kv[1])[: top * 2]:
        lines.append(f"  {100 * n / total:5.1f}% {frame}")
    return lines


def opus_frame_cost(frames: int = 500) -> dict[str, float]:
    """µs to encode and to decode one 1920-sample (80 ms) frame of speech-like audio."""
    pcm = speech_like(frames * 1920 / 24000, seed=7)
    chunks = [pcm[i * 1920 : (i + 1) * 1920] for i in range(frames)]
    writer = sphn.OpusStreamWriter(24000)
    started = time.perf_counter()
    pages = [writer.append_pcm(chunk) for chunk in chunks]
    encode = (time.perf_counter() - started) / frames
    reader = sphn.OpusStreamReader(24000)
    started = time.perf_counter()
    for page in pages:
        reader.append_bytes(page)
    decode = (time.perf_counter() - started) / frames
    return {"encode_us": encode * 1e6, "decode_us": decode * 1e6}


def on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child process to ``cpus`` (None: no pinning)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)
