"""First-run errors are one line that says what to do, not a traceback: a busy port under
``unmute-trio serve`` and ``unmute-trio sim``, the example client with no server or after a
fatal server error. And ``unmute-trio sim`` on other ports prints the variables to set."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import closed_port
from unmute_trio.cli import _bind_error
from unmute_trio.session.runner import run_conversation
from unmute_trio.settings import Settings
from unmute_trio.testing.llm_sim import LlmSimulator
from unmute_trio.testing.sims import RunningSims, SimsConfig
from unmute_trio.testing.stt_sim import SttSimulator
from unmute_trio.testing.tts_sim import TtsSimulator
from unmute_trio.testing.voice_cloning_sim import VoiceCloningSimulator

REPOSITORY = Path(__file__).resolve().parents[1]
TALK_CLIENT = REPOSITORY / "examples" / "talk_client.py"


def environment() -> dict[str, str]:
    down = f"127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KYUTAI_", "UNMUTE_"))}
    return {**env, "KYUTAI_STT_URL": f"ws://{down}", "KYUTAI_LLM_URL": f"http://{down}"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another program is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], env=environment(), capture_output=True, text=True, timeout=60
    )


def test_serve_on_a_busy_port_says_so_in_one_line(busy_port: int) -> None:
    result = run("-m", "unmute_trio", "serve", "--host", "127.0.0.1", "--port", str(busy_port))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"unmute-trio serve: port {busy_port} is in use (on 127.0.0.1): stop the other server "
        "there or choose another port with --port"
    ]


def test_sim_on_a_busy_port_says_which_and_the_option_in_one_line(busy_port: int) -> None:
    ports = ["--stt-port", "0", "--tts-port", str(busy_port), "--llm-port", "0"]
    ports += ["--voice-cloning-port", "0"]
    result = run("-m", "unmute_trio", "sim", *ports, "--log-level", "WARNING")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"unmute-trio sim: cannot start the simulators: the TTS simulator: port {busy_port} is in"
        " use (on 127.0.0.1): stop the other server there or choose another port with --tts-port"
    ]


def test_the_example_client_without_a_server_says_so_in_one_line() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/v1/realtime"
    result = run(str(TALK_CLIENT), "--url", url)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"FAILED: cannot connect to {url}: ")
    assert "is `unmute-trio serve` running there?" in line


async def test_the_example_client_after_a_fatal_error_says_why_in_one_line(
    serve, all_down_settings: Settings
) -> None:
    base = await serve(all_down_settings, session_runner=run_conversation)
    url = base.replace("http://", "ws://") + "/v1/realtime"
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(TALK_CLIENT), "--url", url],
            env=environment(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "FAILED: the server closed the conversation (1011): Service 'stt' is not working right "
        "now. Please try again later."
    ]


# ------------------------------------------------------------------ sim on other ports


def running_sims(host: str, ports: tuple[int, int, int, int]) -> RunningSims:
    config = SimsConfig()
    return RunningSims(
        host,
        SttSimulator(config.stt),
        TtsSimulator(config.tts),
        LlmSimulator(config.llm),
        VoiceCloningSimulator(config.voice_cloning),
        *ports,
    )


def test_sim_on_the_default_ports_needs_no_configuration() -> None:
    lines = running_sims("127.0.0.1", (8090, 8089, 8091, 8092)).announcement()
    assert "`unmute-trio serve` (and `make run`) use them with no configuration" in lines[4]


@pytest.mark.parametrize(
    ("host", "ports"),
    [("127.0.0.1", (9090, 8089, 8091, 8092)), ("192.0.2.1", (8090, 8089, 8091, 8092))],
)
def test_sim_elsewhere_prints_the_variables_to_set(
    host: str, ports: tuple[int, int, int, int]
) -> None:
    lines = running_sims(host, ports).announcement()
    assert lines[:4] == [
        f"export KYUTAI_STT_URL=ws://{host}:{ports[0]}",
        f"export KYUTAI_TTS_URL=ws://{host}:{ports[1]}",
        f"export KYUTAI_LLM_URL=http://{host}:{ports[2]}",
        f"export KYUTAI_VOICE_CLONING_URL=http://{host}:{ports[3]}",
    ]
    assert "by default" not in " ".join(lines)
    assert "no configuration" not in " ".join(lines)


def test_a_port_taken_after_the_check_is_still_one_line() -> None:
    """``serve`` checks the port before starting; if it is taken in between, hypercorn's
    failure (a group around the OSError) is recognised the same way."""
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert _bind_error(ExceptionGroup("serve", [ExceptionGroup("listen", [in_use])])) is in_use
    assert _bind_error(in_use) is in_use
    assert _bind_error(ExceptionGroup("serve", [RuntimeError("bug")])) is None
    assert _bind_error(OSError(errno.EMFILE, "Too many open files")) is None
