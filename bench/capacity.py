"""Capacity benchmark: how many concurrent voice sessions one server process holds in real time.

    .venv/bin/python bench/capacity.py [--stages 1,10,20,30,40,50,75,100,150] [--pin-server]
                                       [--json out.json] [--profile-sessions N] [--workers N]

It starts, each in its own process: the simulated STT (one ``unmute-trio sim``), the simulated
TTS and LLM (a second ``unmute-trio sim``), and one server (``unmute-trio serve``). Then, for
each stage, load generators (``unmute-trio loadtest`` processes, at most
``--users-per-generator`` users each, so the generator is not the bottleneck) hold that many
concurrent conversations, and the script reads the server's CPU time and memory from /proc.

With ``--workers N`` (N > 1) the server is hypercorn's supervisor and N worker processes
(``unmute-trio serve --config`` a TOML file with ``workers = N``, see docs/deployment.md); its
CPU time, RSS and busiest second are then summed over that process tree, read at each sample.

A stage **holds real time** when the p99 gap between bot audio deltas is ≤ 100 ms, every
conversation succeeded, and no reply started late (backend-added latency above
``--late-start-ms``). The ramp stops after ``--stop-after`` consecutive stages that do not
hold (2 by default: on a shared machine one burst of someone else's work can spoil a stage),
or when the time budget would be exceeded.

Columns: sessions; whether real time held; server CPU seconds per session-second (CPU time of
the server's processes over the stage ÷ the summed duration of its sessions); server RSS growth per
session (peak RSS during the stage − RSS after the warm-up, ÷ sessions); backend-added latency
p50/p99 (voice-to-voice − the simulators' designed latency, see unmute_trio.loadtest.floor);
p99 audio gap; late frames; late turn starts; errors; average CPU use of the server, the
simulators, the generators and everything else on the machine (% of one core), and the busiest
second of the server and of each simulator — all of them share this machine's cores
(``--pin-server`` keeps the simulators and generators off the server's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from unmute_trio.loadtest.procfs import (
    children_cpu,
    cpu_seconds,
    machine,
    machine_busy_seconds,
    on_cpus,
    opus_frame_cost,
    profile_summary,
    rss_mib,
    start_profiler,
)
from unmute_trio.loadtest.report import LoadTestReport, load_report, merge_reports

PROC = Path("/proc")
MAX_GAP_S = 0.100
SAMPLE_EVERY_S = 0.2
# `unmute-trio sim` on ports of its own prints `export KYUTAI_STT_URL=ws://…` lines.
SIM_LINE = re.compile(r"^export KYUTAI_(STT|TTS|LLM)_URL=(\S+)")


# ------------------------------------------------------------------ machine and codec


# ------------------------------------------------------------------ the server's process tree


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and every process descended from it, parents first, as ``proc`` shows them now:
    a child started a moment ago appears once it exists, one that has exited is gone. Read from
    each thread's ``task/<tid>/children`` (the children that thread started), or, on a kernel
    without those files, from the parent pid of every process in ``<pid>/stat``."""
    if (proc / str(pid) / "task" / str(pid) / "children").exists():

        def children(parent: int) -> list[int]:
            return _task_children(parent, proc)
    else:
        parents = _parents(proc)

        def children(parent: int) -> list[int]:
            return [child for child, p in parents.items() if p == parent]

    tree = [pid]
    for parent in tree:  # grows while it is walked
        tree.extend(child for child in children(parent) if child not in tree)
    return tree


def _task_children(pid: int, proc: Path) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the process has exited
        for task in (proc / str(pid) / "task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # so has the thread
                found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def _parents(proc: Path) -> dict[int, int]:
    """Each process's parent, from field 4 of ``<pid>/stat`` (after the command name's ")")."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    return parents


def _descendants_sum(read: Callable[[int], float], pid: int) -> float:
    """``read(pid)`` plus ``read`` of each living descendant (one that exits meanwhile, or a
    zombie without memory, counts 0; a descendant reaped before the call is not counted)."""
    total = read(pid)
    for child in process_tree(pid)[1:]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            total += read(child)
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its living descendants."""
    return _descendants_sum(cpu_seconds, pid)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its living descendants (summed: pages they share, if any,
    count once per process; hypercorn's workers are spawned, not forked, and share little)."""
    return _descendants_sum(rss_mib, pid)


def cpu_of(name: str, pid: int) -> float:
    """CPU seconds of one of the measured processes; the server's are its process tree's
    (hypercorn's supervisor and its workers with ``--workers`` above 1)."""
    return tree_cpu_seconds(pid) if name == "server" else cpu_seconds(pid)


# ------------------------------------------------------------------ processes


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "unmute_trio", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sims(
    name: str, logs: Path, cpus: set[int] | None
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """An ``unmute-trio sim`` on ports chosen by the system; returns it and its URLs."""
    ports = ("--stt-port", "0", "--tts-port", "0", "--llm-port", "0", "--voice-cloning-port", "0")
    process = subprocess.Popen(
        cli("sim", *ports, "--capacity", "5000", "--log-level", "WARNING"),
        stdout=subprocess.PIPE,
        stderr=(logs / f"{name}.log").open("w"),
        text=True,
        preexec_fn=on_cpus(cpus),
    )
    urls: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if match := SIM_LINE.match(line):
            urls[match.group(1)] = match.group(2)
        if line.startswith("Simulators running"):
            return process, urls
    raise SystemExit(f"the {name} simulators did not start (see {logs / name}.log)")


def hypercorn_toml(workers: int) -> str:
    """A hypercorn TOML file for ``unmute-trio serve --config``: what ``serve`` uses without one
    (unmute_trio/cli.py), with ``workers`` processes (``--host`` and ``--port`` set the bind)."""
    from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES

    return (
        "# bench/capacity.py --workers: unmute-trio serve's defaults, with several workers\n"
        'worker_class = "trio"\n'
        f"workers = {workers}\n"
        'accesslog = "-"\n'
        'errorlog = "-"\n'
        "graceful_timeout = 10\n"
        f"websocket_max_message_size = {MAX_CLIENT_FRAME_BYTES}\n"
    )


def start_server(
    env: dict[str, str],
    logs: Path,
    cpus: set[int] | None,
    code: Path | None = None,
    workers: int = 1,
) -> tuple[subprocess.Popen[bytes], int]:
    """``unmute-trio serve``, from ``code`` (a checkout: run there, first on the path) if given;
    with ``workers`` above 1, hypercorn's supervisor and that many worker processes (they
    inherit its CPU affinity)."""
    port = free_port()
    log = (logs / "server.log").open("wb")
    if code is not None:
        env = {**env, "PYTHONPATH": str(code.resolve())}
    config: tuple[str, ...] = ()
    if workers > 1:
        toml = logs / "hypercorn.toml"
        toml.write_text(hypercorn_toml(workers))
        config = ("--config", str(toml))
    process = subprocess.Popen(
        cli("serve", "--host", "127.0.0.1", "--port", str(port), *config),
        env={**os.environ, **env},
        cwd=code,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=on_cpus(cpus),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json().get("ok"):
                return process, port
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    stop_server(process)  # not left running (with its workers) after this script exits
    raise SystemExit(f"the server did not become healthy (see {logs / 'server.log'})")


def wait_until_settled(pid: int, timeout: float = 60.0) -> None:
    """Until the server's processes use (almost) no CPU: with several workers the first one
    ready answers the health check while the others may still be importing the app."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree_cpu_seconds(pid)
        if now - before < 0.05:
            return
        before = now
    print(f"the server's processes were still busy after {timeout:.0f} s", file=sys.stderr)


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (field 22 of /proc/<pid>/stat), to tell it from a later process that
    gets the same pid; None once it has exited."""
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError):
        return None


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """:func:`stop`; the supervisor stops its workers itself, but one killed after the timeout
    would leave them running: kill those that are left (still the same processes)."""
    left = []
    if process.poll() is None:
        left = [(pid, start_time(pid)) for pid in process_tree(process.pid)[1:]]
    stop(process)
    for pid, started in left:
        if started is not None and start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_server_profiler(pid: int, out: Path, workers: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the server: :func:`start_profiler`, or with several workers the same command
    with ``--subprocesses`` on the supervisor, so that it samples the workers too."""
    if workers == 1:
        return start_profiler(pid, out)
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    command = [str(py_spy), "record", "--pid", str(pid), "--subprocesses", "--format", "raw"]
    return subprocess.Popen(
        [*command, "--output", str(out), "--rate", "100", "--nonblocking", "--duration", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# With --subprocesses py-spy starts each stack with one frame per process, from the supervisor
# down: `process 123:"<command line>"`; a command line may hold ";", the frame separator.
PROCESS_FRAME = re.compile(r'process (\d+):"[^"]*"')


def shorten_process_frames(raw: str) -> str:
    """``process 123`` for each process frame of a py-spy raw profile, so that the summary keeps
    each worker's share (under "including callees") and splits frames where it should."""
    return PROCESS_FRAME.sub(r"process \1", raw)


# ------------------------------------------------------------------ one stage


def run_stage(
    sessions: int, args: argparse.Namespace, url: str, pids: dict[str, int], work: Path
) -> tuple[LoadTestReport, dict[str, float]]:
    """Hold ``sessions`` conversations at once; return the merged report and resource use."""
    generators = math.ceil(sessions / args.users_per_generator)
    ramp = min(args.max_ramp_seconds, 0.1 * sessions)
    turns = args.single_session_turns if sessions == 1 else args.turns
    cpu_before = {name: cpu_of(name, pid) for name, pid in pids.items()}
    children_before = children_cpu()
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    processes = []
    for g in range(generators):
        users = sessions // generators + (g < sessions % generators)
        out = work / f"stage{sessions}-{g}.json"
        command = cli(
            "loadtest", "--url", url, "--users", str(users), "--turns", str(turns),
            "--speech-seconds", str(args.speech_seconds), "--ramp-seconds", str(ramp),
            "--delay-seconds", f"{g * ramp / sessions:.3f}", "--seed", str(g),
            "--simulators", "--quiet", "--json", str(out),
        )  # fmt: skip
        generator = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, preexec_fn=on_cpus(args.others_cpus)
        )
        processes.append((generator, out))
    profiler = None
    if args.profile_sessions == sessions:
        profiler = start_server_profiler(
            pids["server"], work / f"profile-{sessions}.txt", args.workers
        )
    peak_rss = 0.0
    # CPU time of each process at each sample, for the busiest second of the stage.
    samples: list[tuple[float, dict[str, float]]] = []
    while any(p.poll() is None for p, _ in processes):
        peak_rss = max(peak_rss, tree_rss_mib(pids["server"]))
        samples.append((time.monotonic(), {n: cpu_of(n, pid) for n, pid in pids.items()}))
        time.sleep(SAMPLE_EVERY_S)
    wall = time.monotonic() - started
    if profiler is not None:
        stop(profiler)  # py-spy writes its samples on SIGINT
        profile = work / f"profile-{sessions}.txt"
        if args.workers > 1 and profile.exists():
            profile.write_text(shorten_process_frames(profile.read_text()))
    use = {f"{name}_cpu_s": cpu_of(name, pid) - cpu_before[name] for name, pid in pids.items()}
    use["generators_cpu_s"] = children_cpu() - children_before
    # Everything else that ran on the machine meanwhile (other users, this script itself).
    use["other_cpu_s"] = machine_busy_seconds() - busy_before - sum(use.values())
    use["wall_s"] = wall
    window = round(1.0 / SAMPLE_EVERY_S)
    for name in pids:
        use[f"{name}_peak_cpu_pct"] = max(
            (
                100 * (b[1][name] - a[1][name]) / (b[0] - a[0])
                for a, b in zip(samples, samples[window:], strict=False)
            ),
            default=0.0,
        )
    use["peak_rss_mib"] = peak_rss
    write_cpu_series(work / f"cpu-stage{sessions}.json", samples, window)
    reports = [load_report(out.read_text()) for _, out in processes if out.exists()]
    if len(reports) != len(processes):
        raise SystemExit(f"a load generator of stage {sessions} wrote no report")
    return merge_reports(reports), use


def write_cpu_series(
    path: Path, samples: list[tuple[float, dict[str, float]]], window: int
) -> None:
    """Each process's CPU use (% of one CPU) over each second of the stage, as
    ``[unix time at the end of the second, %]`` lists: bench/turn_starts.py compares the
    replies' latencies with it."""
    to_unix = time.time() - time.monotonic()
    series = {
        name: [
            [round(b[0] + to_unix, 3), round(100 * (b[1][name] - a[1][name]) / (b[0] - a[0]), 1)]
            for a, b in zip(samples, samples[window:], strict=False)
        ]
        for name in (samples[0][1] if samples else {})
    }
    path.write_text(json.dumps(series))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def stage_row(
    sessions: int, report: LoadTestReport, use: dict[str, float], baseline_rss: float, late_s: float
) -> dict[str, object]:
    replies = report.turns(replies_only=True)
    added = [t.backend_added for t in replies if t.backend_added is not None]
    late_starts = sum(a > late_s for a in added)
    summary = report.summary  # computed on each access: once here
    gap_p99 = summary["audio_gap"].p99
    session_seconds = sum(c.duration_s for c in report.conversations)
    peak, mean_open = report.concurrency()
    holds = (
        report.ok_fraction == 1.0
        and gap_p99 is not None
        and gap_p99 <= MAX_GAP_S
        and late_starts == 0
    )

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) * 1000 if values else None

    v2v = [t.voice_to_voice for t in replies if t.voice_to_voice is not None]
    return {
        "sessions": sessions,
        "holds_real_time": holds,
        "peak_concurrent": peak,
        "mean_concurrent": round(mean_open, 1),
        "cpu_s_per_session_s": use["server_cpu_s"] / session_seconds,
        "rss_mib_per_session": (use["peak_rss_mib"] - baseline_rss) / sessions,
        "backend_added_p50_ms": pct(added, 50),
        "backend_added_p99_ms": pct(added, 99),
        "pause_added_p99_ms": ms(summary["pause_added"].p99),
        "reply_added_p99_ms": ms(summary["reply_added"].p99),
        "voice_to_voice_p50_ms": pct(v2v, 50),
        "voice_to_voice_p99_ms": pct(v2v, 99),
        "audio_gap_p99_ms": ms(gap_p99),
        "late_frames": report.late_frames,
        "frames": report.frames,
        "late_turn_starts": late_starts,
        "reply_turns": len(replies),
        "errors": len(report.errors),
        "error_examples": report.errors[:3],
        "generator_lag_max_ms": report.max_send_lag_s * 1000,
        "server_cpu_pct": 100 * use["server_cpu_s"] / use["wall_s"],
        "sims_cpu_pct": 100 * (use["sims_stt_cpu_s"] + use["sims_tts_llm_cpu_s"]) / use["wall_s"],
        "generators_cpu_pct": 100 * use["generators_cpu_s"] / use["wall_s"],
        "other_cpu_pct": 100 * use["other_cpu_s"] / use["wall_s"],
        "server_peak_cpu_pct": use["server_peak_cpu_pct"],  # the busiest second
        "sims_stt_peak_cpu_pct": use["sims_stt_peak_cpu_pct"],
        "sims_tts_llm_peak_cpu_pct": use["sims_tts_llm_peak_cpu_pct"],
        "stage_wall_s": use["wall_s"],
    }


# ------------------------------------------------------------------ output


def _f(value: object, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, object]]) -> str:
    header = (
        "| sessions | real time | peak open | server CPU s / session-s | RSS MiB / session "
        "| backend-added p50 / p99 ms | voice-to-voice p50 / p99 ms | audio gap p99 ms "
        "| late frames | late starts | errors | CPU % server / sims / generators / other "
        "| busiest second CPU % server / STT sim / TTS+LLM sim |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['sessions']} | {'yes' if r['holds_real_time'] else 'NO'} "
            f"| {r['peak_concurrent']} | {_f(r['cpu_s_per_session_s'], 4)} "
            f"| {_f(r['rss_mib_per_session'], 2)} "
            f"| {_f(r['backend_added_p50_ms'])} / {_f(r['backend_added_p99_ms'])} "
            f"| {_f(r['voice_to_voice_p50_ms'], 0)} / {_f(r['voice_to_voice_p99_ms'], 0)} "
            f"| {_f(r['audio_gap_p99_ms'])} "
            f"| {r['late_frames']} / {r['frames']} | {r['late_turn_starts']} / {r['reply_turns']} "
            f"| {r['errors']} | {_f(r['server_cpu_pct'], 0)} / {_f(r['sims_cpu_pct'], 0)} / "
            f"{_f(r['generators_cpu_pct'], 0)} / {_f(r['other_cpu_pct'], 0)} "
            f"| {_f(r['server_peak_cpu_pct'], 0)} / {_f(r['sims_stt_peak_cpu_pct'], 0)} / "
            f"{_f(r['sims_tts_llm_peak_cpu_pct'], 0)} |"
        )
    return "\n".join(lines)


def summary_lines(result: dict[str, object]) -> list[str]:
    rows: list[dict[str, object]] = result["stages"]  # type: ignore[assignment]
    codec: dict[str, float] = result["opus_frame_cost"]  # type: ignore[assignment]
    held = [r["sessions"] for r in rows if r["holds_real_time"]]
    missed = [r["sessions"] for r in rows if not r["holds_real_time"]]
    m = result["machine"]
    floor_ms = 12.5 * (codec["encode_us"] + codec["decode_us"]) / 1000
    workers: int = result.get("server_workers", 1)  # type: ignore[assignment]
    pinned = "one CPU" if workers == 1 else f"{workers} CPUs"
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, "  # type: ignore[index]
        f"Python {m['python']}; server, simulators and load generators share these CPUs"
        + (f" (server pinned to {pinned}, the rest on the others)" if result["pinned"] else ""),  # type: ignore[index]
        f"Opus, one 80 ms frame (1920 samples): encode {codec['encode_us']:.0f} µs, decode "
        f"{codec['decode_us']:.0f} µs -> codec floor {floor_ms:.1f} ms CPU per session-second "
        f"({floor_ms / 1000:.4f} s/s) while the bot speaks",
        f"largest stage holding real time: {f'{max(held)} sessions' if held else 'none'}"
        f" (stages that did not: {', '.join(map(str, missed)) or 'none'})",
    ]
    if workers > 1:
        lines.insert(
            1,
            f"server: {workers} hypercorn workers under one supervisor"
            f" ({result.get('server_processes', '?')} processes after the warm-up); its CPU, RSS"
            " and busiest second are summed over them",
        )
    return lines


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None, cpus: set[int] | None = None) -> argparse.Namespace:
    """The options; ``cpus``: those this process may run on (default: its affinity)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--stages", default="1,10,20,30,40,50,75,100,150", help="session counts, in order")
    add("--turns", type=int, default=3, help="user turns per conversation (default 3)")
    add("--single-session-turns", type=int, default=5, help="turns of the 1-session stage")
    add("--speech-seconds", type=float, default=1.5)
    add("--users-per-generator", type=int, default=40, help="users per loadtest process")
    add("--max-ramp-seconds", type=float, default=5.0, help="spread of session starts")
    add(
        "--late-start-ms",
        type=float,
        default=250.0,
        help="a reply whose backend-added latency exceeds this started late (default 250)",
    )
    add("--budget-minutes", type=float, default=9.0, help="skip stages that would overrun")
    add("--stop-after", type=int, default=2, help="consecutive failing stages that end the ramp")
    add("--json", type=Path, help="write every figure here")
    add("--profile-sessions", type=int, help="run py-spy on the server during this stage")
    add(
        "--server-code",
        type=Path,
        help="run the server from this checkout (e.g. a git worktree of an older commit), with"
        " the simulators and load generators of this one: a before/after comparison",
    )
    add(
        "--pin-server",
        action="store_true",
        help="run the server on the last CPU (the last N with --workers N) and the simulators"
        " and generators on the others",
    )
    add(
        "--workers",
        type=int,
        default=1,
        help="server worker processes (hypercorn's supervisor starts them; default 1: one"
        " process, no supervisor)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    available = len(os.sched_getaffinity(0) if cpus is None else cpus)
    if args.pin_server and args.workers > 1 and available <= args.workers:
        parser.error(
            f"--pin-server with --workers {args.workers} needs more than {args.workers} CPUs"
            f" (this process may use {available}): the server's workers would leave none for"
            " the simulators and load generators"
        )
    return args


def split_cpus(cpus: list[int], workers: int) -> tuple[set[int], set[int]]:
    """The last ``workers`` CPUs for the server, the others for everything else."""
    return set(cpus[-workers:]), set(cpus[:-workers])


def main() -> int:
    args = parse_args()
    args.server_cpus = args.others_cpus = None
    if args.pin_server:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin-server needs at least 2 CPUs")
        args.server_cpus, args.others_cpus = split_cpus(cpus, args.workers)
    begun = time.monotonic()
    stages = [int(s) for s in args.stages.split(",")]
    result: dict[str, object] = {"machine": machine(), "opus_frame_cost": opus_frame_cost()}
    result["pinned"] = args.pin_server
    result["server_workers"] = args.workers
    logs = Path(tempfile.mkdtemp(prefix="unmute-capacity-"))
    print(f"logs and per-stage reports in {logs}", file=sys.stderr)
    processes: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    server: subprocess.Popen[bytes] | None = None
    try:
        stt_sims, stt_urls = start_sims("sims_stt", logs, args.others_cpus)
        processes.append(stt_sims)
        tts_sims, tts_urls = start_sims("sims_tts_llm", logs, args.others_cpus)
        processes.append(tts_sims)
        env = {
            "KYUTAI_STT_URL": stt_urls["STT"],
            "KYUTAI_TTS_URL": tts_urls["TTS"],
            "KYUTAI_LLM_URL": tts_urls["LLM"],
            "UNMUTE_MAX_SESSIONS": "10000",
            "UNMUTE_LOG_LEVEL": "WARNING",
        }
        result["server_code"] = str(args.server_code or "this checkout")
        server, port = start_server(env, logs, args.server_cpus, args.server_code, args.workers)
        processes.append(server)
        if args.workers > 1:
            wait_until_settled(server.pid)
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        pids = {"server": server.pid, "sims_stt": stt_sims.pid, "sims_tts_llm": tts_sims.pid}
        print("warm-up: 4 sessions", file=sys.stderr)
        warm_args = argparse.Namespace(**{**vars(args), "turns": 1})
        run_stage(4, warm_args, url, pids, logs)
        baseline_rss = tree_rss_mib(server.pid)
        result["server_rss_after_warmup_mib"] = baseline_rss
        result["server_processes"] = len(process_tree(server.pid))
        rows: list[dict[str, object]] = []
        result["stages"] = rows
        last_stage_s = 0.0
        failing = 0
        for sessions in stages:
            elapsed = time.monotonic() - begun
            if rows and elapsed + last_stage_s * 1.2 > args.budget_minutes * 60:
                print(f"stopping: stage {sessions} would exceed the time budget", file=sys.stderr)
                break
            print(f"stage: {sessions} sessions", file=sys.stderr)
            report, use = run_stage(sessions, args, url, pids, logs)
            row = stage_row(sessions, report, use, baseline_rss, args.late_start_ms / 1000)
            rows.append(row)
            last_stage_s = use["wall_s"]
            profile = logs / f"profile-{sessions}.txt"
            if args.profile_sessions == sessions and profile.exists():
                row["profile"] = profile_summary(profile)
                print("\n".join(row["profile"]), file=sys.stderr)
            print(table([row]).splitlines()[-1], file=sys.stderr)
            failing = 0 if row["holds_real_time"] else failing + 1
            if failing >= args.stop_after:
                break
    finally:
        for process in reversed(processes):
            if server is not None and process is server:
                stop_server(server)
            else:
                stop(process)
    result["wall_s"] = time.monotonic() - begun
    print(table(result["stages"]))  # type: ignore[arg-type]
    print()
    for line in summary_lines(result):
        print(line)
    print(f"total wall time {result['wall_s']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
