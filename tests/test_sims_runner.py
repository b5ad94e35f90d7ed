"""The ``sim`` runner: all four simulators together, and the ``unmute-trio sim`` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from unmute_trio.settings import Settings
from unmute_trio.testing.sims import (
    RunningSims,
    SimsConfig,
    add_sim_arguments,
    run_sim_command,
    run_simulators,
    sims_config_from_args,
)

ALL_PORTS_FREE = {"stt_port": 0, "tts_port": 0, "llm_port": 0, "voice_cloning_port": 0}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(argv)


def test_default_ports_are_the_servers_default_urls() -> None:
    config = SimsConfig()
    settings = Settings()
    assert urlsplit(settings.stt_url).port == config.stt_port == 8090
    assert urlsplit(settings.tts_url).port == config.tts_port == 8089
    assert urlsplit(settings.llm_url).port == config.llm_port == 8091
    assert urlsplit(settings.voice_cloning_url).port == config.voice_cloning_port == 8092
    assert sims_config_from_args(parse()).stt_port == 8090


async def test_run_simulators_serves_all_four(nursery: trio.Nursery) -> None:
    with trio.fail_after(2):
        running: RunningSims = await nursery.start(run_simulators, SimsConfig(**ALL_PORTS_FREE))
        ports = {running.stt_port, running.tts_port, running.llm_port, running.voice_cloning_port}
        assert len(ports) == 4 and 0 not in ports
        async with httpx.AsyncClient(timeout=1) as http:
            for url in (running.stt_url, running.tts_url, running.voice_cloning_url):
                http_url = url.replace("ws://", "http://") + "/api/build_info"
                assert (await http.get(http_url)).status_code == 200
            models = (await http.get(running.llm_url + "/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["sim-llm"]
    assert running.open_connections() == {"stt": 0, "tts": 0, "llm": 0, "voice_cloning": 0}
    assert running.environment()["KYUTAI_LLM_URL"] == f"http://127.0.0.1:{running.llm_port}"
    assert len(running.describe()) == 4


def test_options_reach_the_simulator_configs(tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_text("Hello there.\n\n  How are you?  \n")
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps({"Hello there.": "Hi! Bye!"}))
    config = sims_config_from_args(
        parse(
            "--host", "0.0.0.0", "--stt-port", "1", "--tts-port", "2", "--llm-port", "3",
            "--voice-cloning-port", "4", "--capacity", "3", "--llm-ttft", "0.5",
            "--llm-tokens-per-second", "12", "--tts-realtime-factor", "2", "--script", str(script),
            "--llm-replies", str(replies), "--llm-model", "m", "--voice-cloning-delay", "0.25",
            "--kyutai-api-key", "k",
        )
    )  # fmt: skip
    assert (config.host, config.stt_port, config.tts_port) == ("0.0.0.0", 1, 2)
    assert (config.llm_port, config.voice_cloning_port) == (3, 4)
    assert (config.stt.capacity, config.tts.capacity) == (3, 3)
    assert (config.stt.api_key, config.tts.api_key) == ("k", "k")
    assert config.stt.script == ("Hello there.", "How are you?")
    assert config.tts.realtime_factor == 2
    assert (config.llm.ttft_s, config.llm.tokens_per_s, config.llm.model) == (0.5, 12, "m")
    assert config.llm.replies == {"Hello there.": "Hi! Bye!"}
    assert config.voice_cloning.delay_s == 0.25


@pytest.mark.parametrize("option", ["--capacity=0", "--llm-tokens-per-second=0", "--llm-ttft=-1"])
def test_invalid_numbers_are_rejected(option: str) -> None:
    with pytest.raises(SystemExit):
        parse(option)


def test_bad_files_exit_with_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    not_json = tmp_path / "replies.json"
    not_json.write_text("{")
    for argv in (
        ["--script", str(tmp_path / "missing.txt")],
        ["--script", str(empty)],
        ["--llm-replies", str(not_json)],
    ):
        assert run_sim_command(parse(*argv)) == 2
    assert "unmute-trio sim:" in capsys.readouterr().err


def test_port_in_use_exits_with_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run_sim_command(parse("--stt-port", str(port), "--tts-port", "0", "--llm-port", "0",
                                     "--voice-cloning-port", "0"))  # fmt: skip
    assert code == 1
    assert "cannot start the simulators" in capsys.readouterr().err


async def test_command_prints_urls_and_stops_cleanly_on_sigterm() -> None:
    argv = [sys.executable, "-m", "unmute_trio", "sim", "--stt-port", "0", "--tts-port", "0",
            "--llm-port", "0", "--voice-cloning-port", "0", "--log-level", "WARNING"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(10):  # interpreter start and imports, on a loaded machine
            while b"Ctrl-C" not in output:
                data = await process.stdout.receive_some()
                assert data, f"sim exited early: {output!r}"
                output += data
        urls = re.findall(r"(?:ws|http)://127\.0\.0\.1:\d+", output.decode())
        assert len(urls) == 4
        llm_url = next(u for u in urls if u.startswith("http://"))
        async with httpx.AsyncClient(timeout=1) as http:
            with trio.fail_after(2):
                assert (await http.get(llm_url + "/v1/models")).status_code == 200
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            code = await process.wait()
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
