"""bench/capacity.py reads the URLs that ``unmute-trio sim`` prints: a change of that output
once broke the benchmark without any test noticing. With ``--workers N`` it sums the server's
CPU time and memory over its process tree (hypercorn's supervisor and workers), checks the CPUs
that ``--pin-server`` needs, and tells how many workers ran: the parts that need no server."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def load_capacity_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_capacity", REPO / "bench" / "capacity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_capacity"] = module
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_finds_the_simulators_it_starts(tmp_path: Path) -> None:
    capacity = load_capacity_script()
    process, urls = capacity.start_sims("sims", tmp_path, None)
    try:
        assert sorted(urls) == ["LLM", "STT", "TTS"]
        assert urls["STT"].startswith("ws://127.0.0.1:")
        assert urls["TTS"].startswith("ws://127.0.0.1:")
        assert urls["LLM"].startswith("http://127.0.0.1:")
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------ --workers: the process tree


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_process_tree_is_read_from_each_threads_children(tmp_path: Path) -> None:
    capacity = load_capacity_script()
    proc = tmp_path / "proc"
    # 100 started 101 and 102 from its main thread, 104 from its thread 103; 101 started 105.
    _write(proc / "100" / "task" / "100" / "children", "101 102 ")
    _write(proc / "100" / "task" / "103" / "children", "104")
    _write(proc / "101" / "task" / "101" / "children", "105")
    _write(proc / "102" / "task" / "102" / "children", "")
    # 104 has exited since (no directory); 105 has no children; 200 is someone else's.
    _write(proc / "105" / "task" / "105" / "children", "")
    _write(proc / "200" / "task" / "200" / "children", "201")
    tree = capacity.process_tree(100, proc)
    assert tree[0] == 100
    assert sorted(tree) == [100, 101, 102, 104, 105]
    assert tree.index(101) < tree.index(105)  # parents first
    assert capacity.process_tree(105, proc) == [105]


def test_without_children_files_the_tree_is_read_from_each_processs_parent(
    tmp_path: Path,
) -> None:
    capacity = load_capacity_script()
    proc = tmp_path / "proc"

    def stat(pid: int, name: str, ppid: int) -> None:
        _write(proc / str(pid) / "stat", f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194304\n")

    stat(1, "init", 0)
    stat(100, "python", 1)
    stat(101, "a b) S 7", 100)  # a command name may hold spaces and ")"
    stat(102, "sleep", 101)
    stat(103, "python", 100)
    stat(200, "other", 1)
    _write(proc / "stat", "cpu  1 2 3 4\n")  # not a process
    tree = capacity.process_tree(100, proc)
    assert tree[0] == 100
    assert sorted(tree) == [100, 101, 102, 103]
    assert tree.index(101) < tree.index(102)
    assert capacity.process_tree(102, proc) == [102]


def test_a_descendant_that_exits_while_it_is_read_counts_zero(monkeypatch: Any) -> None:
    capacity = load_capacity_script()
    monkeypatch.setattr(capacity, "process_tree", lambda pid: [1, 2, 3, 4, 5])

    def read(pid: int) -> float:
        if pid == 2:
            raise FileNotFoundError  # exited before it was read
        if pid == 3:
            raise ProcessLookupError  # exited while it was read
        if pid == 4:
            raise ValueError("no VmRSS line in /proc")  # a zombie
        return float(pid)

    assert capacity._descendants_sum(read, 1) == 1.0 + 5.0


def test_cpu_time_and_memory_are_summed_over_the_real_process_tree() -> None:
    capacity = load_capacity_script()
    from unmute_trio.loadtest.procfs import cpu_seconds, rss_mib

    # sh -> python (uses 0.3 s of CPU, then waits) -> sleep: a child and a grandchild.
    child = (
        "import subprocess, time\n"
        "sleep = subprocess.Popen(['sleep', '60'])\n"
        "while time.process_time() < 0.3:\n"
        "    pass\n"
        "sleep.wait()\n"
    )
    root = subprocess.Popen(["sh", "-c", '"$0" -c "$1" & wait', sys.executable, child])
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the children appear a moment after the start
            tree = capacity.process_tree(root.pid)
            if len(tree) == 3 and cpu_seconds(tree[1]) >= 0.25:
                break
            time.sleep(0.1)
        assert len(tree) == 3, tree
        assert tree[0] == root.pid
        time.sleep(0.2)  # the python child has finished its loop: the figures hold still
        cpu = [cpu_seconds(pid) for pid in tree]
        rss = [rss_mib(pid) for pid in tree]
        assert capacity.tree_cpu_seconds(root.pid) == pytest.approx(sum(cpu), abs=0.02)
        assert capacity.tree_cpu_seconds(root.pid) >= cpu[0] + 0.25
        assert capacity.tree_rss_mib(root.pid) == pytest.approx(sum(rss), rel=0.05)
        assert capacity.tree_rss_mib(root.pid) > rss[0] + rss[2]  # python's RSS is in it
        assert capacity.cpu_of("server", root.pid) == pytest.approx(sum(cpu), abs=0.02)
        assert capacity.cpu_of("sims_stt", root.pid) == cpu_seconds(root.pid)
    finally:
        for pid in reversed(tree[1:] or capacity.process_tree(root.pid)[1:]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        root.kill()
        root.wait(timeout=10)


# ------------------------------------------------------------------ --workers: options, output


def test_pin_server_with_several_workers_needs_more_cpus_than_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capacity = load_capacity_script()
    with pytest.raises(SystemExit) as refused:
        capacity.parse_args(["--workers", "2", "--pin-server"], cpus={0, 1})
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--pin-server with --workers 2 needs more than 2 CPUs" in error
    assert "may use 2" in error

    args = capacity.parse_args(["--workers", "2", "--pin-server"], cpus={0, 1, 2})
    assert (args.workers, args.pin_server) == (2, True)
    assert capacity.split_cpus([0, 1, 2], 2) == ({1, 2}, {0})
    # Without pinning, or with one worker, two CPUs do.
    assert capacity.parse_args(["--workers", "2"], cpus={0, 1}).workers == 2
    args = capacity.parse_args(["--pin-server"], cpus={0, 1})
    assert args.workers == 1
    assert capacity.split_cpus([0, 1], 1) == ({1}, {0})

    with pytest.raises(SystemExit):
        capacity.parse_args(["--workers", "0"], cpus={0, 1})
    assert "--workers must be 1 or more" in capsys.readouterr().err


def test_the_hypercorn_file_for_several_workers_keeps_serves_defaults(tmp_path: Path) -> None:
    capacity = load_capacity_script()
    from hypercorn.config import Config

    from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES

    path = tmp_path / "hypercorn.toml"
    path.write_text(capacity.hypercorn_toml(3))
    config = Config.from_toml(path)
    assert config.workers == 3
    assert config.worker_class == "trio"
    assert config.graceful_timeout == 10
    assert config.websocket_max_message_size == MAX_CLIENT_FRAME_BYTES
    assert (config.accesslog, config.errorlog) == ("-", "-")


def test_py_spy_process_frames_are_shortened_to_their_pid(tmp_path: Path) -> None:
    capacity = load_capacity_script()
    from unmute_trio.loadtest.procfs import profile_summary

    supervisor = 'process 10:"/venv/bin/python -m unmute_trio serve --config x.toml"'
    worker = (
        'process 12:"/venv/bin/python -B -c from multiprocessing.spawn import spawn_main;'
        ' spawn_main(tracker_fd=4, pipe_handle=6) --multiprocessing-fork"'
    )
    raw = (
        f"{supervisor};{worker};<module> (<string>:1);encode (opus.py:12) 3\n"
        f'{supervisor};process 13:"python";decode (opus.py:20) 1\n'
    )
    short = capacity.shorten_process_frames(raw)
    assert short == (
        "process 10;process 12;<module> (<string>:1);encode (opus.py:12) 3\n"
        "process 10;process 13;decode (opus.py:20) 1\n"
    )
    path = tmp_path / "profile.txt"
    path.write_text(short)
    summary = profile_summary(path)
    assert "   75.0% encode (opus.py)" in summary
    assert "   75.0% process 12" in summary
    assert not any("spawn_main(" in line for line in summary)


def _result(workers: int, pinned: bool) -> dict[str, object]:
    machine = {"cpus": 4, "cpu_model": "cpu", "ram_gib": 8.0, "python": "3.11.7"}
    result: dict[str, object] = {
        "machine": machine,
        "opus_frame_cost": {"encode_us": 100.0, "decode_us": 50.0},
        "stages": [{"sessions": 1, "holds_real_time": True}],
        "pinned": pinned,
        "server_workers": workers,
    }
    if workers > 1:
        result["server_processes"] = workers + 2
    return result


def test_the_summary_tells_how_many_workers_the_server_ran() -> None:
    capacity = load_capacity_script()
    one = capacity.summary_lines(_result(1, pinned=True))
    assert len(one) == 3  # as before --workers existed
    assert one[0].endswith("share these CPUs (server pinned to one CPU, the rest on the others)")
    older = _result(1, pinned=False)
    del older["server_workers"]  # a result written before --workers existed
    assert capacity.summary_lines(older) == capacity.summary_lines(_result(1, pinned=False))

    two = capacity.summary_lines(_result(2, pinned=True))
    assert two[0].endswith("(server pinned to 2 CPUs, the rest on the others)")
    assert two[1] == (
        "server: 2 hypercorn workers under one supervisor (4 processes after the warm-up);"
        " its CPU, RSS and busiest second are summed over them"
    )
    assert two[2:] == one[1:]


def test_cpu_series_per_second_for_turn_starts(tmp_path: Path) -> None:
    capacity = load_capacity_script()
    # Samples every 0.2 s: the server uses 0.5 CPU s per second, the simulator 0.1.
    samples = [(10 + 0.2 * i, {"server": 0.1 * i, "sims_stt": 0.02 * i}) for i in range(11)]
    out = tmp_path / "cpu-stage3.json"
    capacity.write_cpu_series(out, samples, window=5)
    series = json.loads(out.read_text())
    assert sorted(series) == ["server", "sims_stt"]
    assert len(series["server"]) == 6  # windows ending at samples 5..10
    assert {pct for _, pct in series["server"]} == {50.0}
    assert {pct for _, pct in series["sims_stt"]} == {10.0}
    ends = [when for when, _ in series["server"]]
    assert ends == sorted(ends) and abs(time.time() - ends[-1]) < 3600 * 24 * 365 * 60


def test_turn_starts_splits_each_reply(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("turn_starts", REPO / "bench" / "turn_starts.py")
    assert spec is not None and spec.loader is not None
    turn_starts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(turn_starts)

    def turn(stopped: float, created: float, text: float, audio: float | None) -> dict[str, Any]:
        keys = ("speech_stopped", "response_created", "first_text_ready", "first_audio")
        return dict(zip(keys, (stopped, created, text, audio), strict=True))

    report = {
        "conversations": [
            {"started_at_unix": 1000.0, "turns": [turn(1.0, 1.01, 1.2, 1.25)]},
            # Starts 0.3 s after the first: the two are one burst. The second turn got no audio.
            {"started_at_unix": 1000.3, "turns": [turn(1.0, 1.02, 1.3, 1.4), turn(5, 5, 5, None)]},
        ]
    }
    path = tmp_path / "stage2-0.json"
    path.write_text(json.dumps(report))
    rows = turn_starts.replies([path])
    assert len(rows) == 2
    first, second = sorted(rows, key=lambda row: row["start_unix"])
    assert first["flush"] == pytest.approx(0.01) and second["flush"] == pytest.approx(0.02)
    assert first["llm"] == pytest.approx(0.19) and second["tts"] == pytest.approx(0.1)
    assert first["reply"] == pytest.approx(0.25) and second["reply"] == pytest.approx(0.4)
    assert first["burst"] == second["burst"] == 2
    cpu = [[1001.5, 40.0], [1002.0, 60.0], [1003.5, 95.0]]
    assert turn_starts.cpu_during(cpu, 1001.0) == pytest.approx(50.0)
    buckets = turn_starts.cpu_buckets(rows, cpu, "server")
    assert {label: len(group) for label, group in buckets.items()} == {"server 40-60 %": 2}


def test_the_summary_names_the_largest_stage_that_held() -> None:
    capacity = load_capacity_script()
    result = _result(1, pinned=True)
    result["stages"] = [
        {"sessions": 10, "holds_real_time": True},
        {"sessions": 20, "holds_real_time": True},
        {"sessions": 30, "holds_real_time": False},
    ]
    assert capacity.summary_lines(result)[-1] == (
        "largest stage holding real time: 20 sessions (stages that did not: 30)"
    )
    result["stages"] = [{"sessions": 50, "holds_real_time": False}]
    assert capacity.summary_lines(result)[-1] == (
        "largest stage holding real time: none (stages that did not: 50)"
    )
