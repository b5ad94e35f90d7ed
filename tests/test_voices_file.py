from __future__ import annotations

from pathlib import Path

import pytest

from unmute_trio.voices import VoiceFileError, load_voices, public_voices

REPO_VOICES = Path(__file__).resolve().parent.parent / "voices.yaml"


def test_shipped_voices_file_is_valid_and_all_good() -> None:
    voices = load_voices(REPO_VOICES)
    assert len(voices) >= 5
    kinds = {v.instructions.type for v in voices if v.instructions}
    assert {"smalltalk", "quiz_show", "constant", "news", "unmute_explanation"} <= kinds
    assert all(v.good for v in voices)
    assert len(public_voices(voices)) == len(voices)


def test_bad_voices_are_not_served(tmp_path: Path) -> None:
    f = tmp_path / "voices.yaml"
    f.write_text(
        "- name: A\n  good: true\n  source: {source_type: file, path_on_server: a.wav}\n"
        "- name: B\n  good: false\n  source: {source_type: file, path_on_server: b.wav}\n"
        "- name: C\n  source: {source_type: file, path_on_server: c.wav}\n"
    )
    assert [v["name"] for v in public_voices(load_voices(f))] == ["A"]


def test_invalid_yaml_reports_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "voices.yaml"
    f.write_text("- name: A\n  good: true\n  source: [unclosed\n")
    with pytest.raises(VoiceFileError) as e:
        load_voices(f)
    assert e.value.path == f and e.value.line == 4
    assert str(e.value).startswith(f"{f}:4: invalid YAML")


def test_schema_error_reports_the_line_of_the_voice(tmp_path: Path) -> None:
    f = tmp_path / "voices.yaml"
    f.write_text(
        "- name: A\n  source: {source_type: file, path_on_server: a.wav}\n"
        "- name: B\n  source: {source_type: tape, path_on_server: b.wav}\n"
    )
    with pytest.raises(VoiceFileError) as e:
        load_voices(f)
    assert e.value.line == 3
    assert "voice #1" in e.value.reason and "source" in e.value.reason


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "voices.yaml"
    f.write_text("- name: A\n  colour: blue\n  source: {source_type: file, path_on_server: a}\n")
    with pytest.raises(VoiceFileError, match="colour"):
        load_voices(f)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(VoiceFileError, match="cannot read"):
        load_voices(tmp_path / "nope.yaml")
