"""bench/capacity.py reads the URLs that ``unmute-trio sim`` prints: a change of that output
once broke the benchmark without any test noticing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
