"""``hypercorn --config hypercorn.toml -w 2 unmute_trio.asgi:app`` with PROMETHEUS_MULTIPROC_DIR:
``/metrics`` (answered by either worker) sums both workers, and SIGTERM to hypercorn's master
still drains the workers' sessions with close 1001 and exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.test_drain import REPO, free_port, idle_session, wait_until_serving
from unmute_trio.testing.llm_sim import LlmSimulator
from unmute_trio.testing.stt_sim import SttSimulator
from unmute_trio.testing.tts_sim import TtsSimulator


def worker_pids(metrics_dir: Path) -> set[str]:
    """Each worker writes its metrics to files named after its pid (the master has none)."""
    return {file.stem.rsplit("_", 1)[1] for file in metrics_dir.glob("*.db")}


def sessions_by_worker(metrics_dir: Path, scratch: Path) -> dict[str, float]:
    """worker_sessions_total of each worker that counted sessions, from its own files alone."""
    by_pid: dict[str, float] = {}
    for pid in worker_pids(metrics_dir):
        one = scratch / pid
        shutil.rmtree(one, ignore_errors=True)
        one.mkdir(parents=True)
        for file in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(file, one / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))
        sessions = registry.get_sample_value("worker_sessions_total") or 0.0
        if sessions:
            by_pid[pid] = sessions
    return by_pid


def sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_sum_two_workers_and_sigterm_drains_them(tmp_path: Path) -> None:
    stt, tts, llm = SttSimulator(), TtsSimulator(), LlmSimulator()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"  # does not exist yet: the workers create it
    log_path = tmp_path / "hypercorn.log"
    async with trio.open_nursery() as nursery:
        stt_port, tts_port, llm_port = [await nursery.start(s.serve) for s in (stt, tts, llm)]
        env = {
            **os.environ,
            "KYUTAI_STT_URL": f"ws://127.0.0.1:{stt_port}",
            "KYUTAI_TTS_URL": f"ws://127.0.0.1:{tts_port}",
            "KYUTAI_LLM_URL": f"http://127.0.0.1:{llm_port}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        command = [sys.executable, "-m", "hypercorn", "--config", "hypercorn.toml"]
        command += ["--workers", "2", "--bind", f"127.0.0.1:{port}", "unmute_trio.asgi:app"]
        with log_path.open("wb") as log:
            process = await trio.lowlevel.open_process(
                command,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one on failure
            )
        try:
            with trio.fail_after(20):
                await wait_until_serving(base_url, process)
                while len(worker_pids(metrics_dir)) < 2:  # both have imported the app
                    await trio.sleep(0.05)
                url = f"ws://127.0.0.1:{port}/v1/realtime"
                async with AsyncExitStack() as stack:
                    first = await stack.enter_async_context(idle_session(url))
                    [first_pid] = sessions_by_worker(metrics_dir, tmp_path / "s1")
                    # With the first worker stopped, the kernel can only hand the next
                    # connection to the other one.
                    os.kill(int(first_pid), signal.SIGSTOP)
                    try:
                        second = await stack.enter_async_context(idle_session(url))
                    finally:
                        os.kill(int(first_pid), signal.SIGCONT)
                    by_worker = sessions_by_worker(metrics_dir, tmp_path / "s2")
                    assert sorted(by_worker.values()) == [1.0, 1.0]
                    async with httpx.AsyncClient(timeout=2) as http:
                        text = (await http.get(base_url + "/metrics")).text
                    assert sample(text, "worker_sessions_total") == 2
                    assert sample(text, "worker_active_sessions") == 2

                    process.send_signal(signal.SIGTERM)  # to hypercorn's master only
                    for client in (first, second):
                        assert await client.wait_closed() == 1001
                        assert client.close_reason == "server shutting down"
                assert await process.wait() == 0, log_path.read_text()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)  # the master and its workers
                with trio.CancelScope(shield=True):
                    await process.wait()
        # Each worker removed its live gauges on the way out; counters stay.
        assert not list(metrics_dir.glob("gauge_livesum_*.db"))
        assert list(metrics_dir.glob("counter_*.db"))
        nursery.cancel_scope.cancel()


async def test_serve_with_two_workers_wipes_the_metrics_dir_and_drains(tmp_path: Path) -> None:
    """``unmute-trio serve --config`` with ``workers = 2`` runs hypercorn's supervisor after
    wiping the files a previous run left in PROMETHEUS_MULTIPROC_DIR."""
    stt, tts, llm = SttSimulator(), TtsSimulator(), LlmSimulator()
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"left by a previous run")
    keep = metrics_dir / "README"
    keep.write_text("not a metrics file: left alone")
    config = tmp_path / "hypercorn.toml"
    config.write_text((REPO / "hypercorn.toml").read_text().replace("workers = 1", "workers = 2"))
    log_path = tmp_path / "serve.log"
    async with trio.open_nursery() as nursery:
        stt_port, tts_port, llm_port = [await nursery.start(s.serve) for s in (stt, tts, llm)]
        env = {
            **os.environ,
            "KYUTAI_STT_URL": f"ws://127.0.0.1:{stt_port}",
            "KYUTAI_TTS_URL": f"ws://127.0.0.1:{tts_port}",
            "KYUTAI_LLM_URL": f"http://127.0.0.1:{llm_port}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        command = [sys.executable, "-m", "unmute_trio", "serve", "--config", str(config)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("wb") as log:
            process = await trio.lowlevel.open_process(
                command,
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one on failure
            )
        try:
            with trio.fail_after(20):
                await wait_until_serving(f"http://127.0.0.1:{port}", process)
                assert not stale.exists() and keep.exists()
                async with idle_session(f"ws://127.0.0.1:{port}/v1/realtime") as client:
                    async with httpx.AsyncClient(timeout=2) as http:
                        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    assert sample(text, "worker_sessions_total") == 1
                    process.send_signal(signal.SIGTERM)
                    assert await client.wait_closed() == 1001
                assert await process.wait() == 0, log_path.read_text()
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)  # the master and its workers
                with trio.CancelScope(shield=True):
                    await process.wait()
        nursery.cancel_scope.cancel()
