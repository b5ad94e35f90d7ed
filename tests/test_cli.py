from __future__ import annotations

import subprocess
import sys

import pytest

from unmute_trio.cli import build_parser, main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "sim" in out


def test_serve_options() -> None:
    args = build_parser().parse_args(["serve", "--host", "127.0.0.1", "--port", "9000"])
    assert (args.host, args.port, args.config) == ("127.0.0.1", 9000, None)


def test_invalid_configuration_fails_at_start_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "unmute_trio", "serve"],
        env={"KYUTAI_TTS_URL": "gopher://tts", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "KYUTAI_TTS_URL" in result.stderr


def test_broken_voices_file_fails_at_start(tmp_path) -> None:
    bad = tmp_path / "voices.yaml"
    bad.write_text("- name: [\n")
    result = subprocess.run(
        [sys.executable, "-m", "unmute_trio", "serve"],
        env={"UNMUTE_VOICES_FILE": str(bad), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{bad}:" in result.stderr
