"""TTS text cleaning (contract 0.5)."""

from __future__ import annotations

import pytest

from unmute_trio.protocol.tts_text import clean_text_for_tts


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Hello", "Hello"),
        ("  Hello there  ", "Hello there"),
        ("**bold** and _italic_", "bold and italic"),
        ("run `ls` now", "run ls now"),
        ("“quoted” and ‘single’", "\"quoted\" and 'single'"),
        ("it’s", "it's"),
        ("Note : this", "Note this"),
        ("time: 10:30", "time: 10:30"),  # only a free-standing colon is replaced
        ("snake_case", "snakecase"),
        (" *", ""),
        ("* *", ""),
        ("", ""),
        ("   ", ""),
        ("héllo wörld", "héllo wörld"),
    ],
)
def test_clean_text_for_tts(raw: str, cleaned: str) -> None:
    assert clean_text_for_tts(raw) == cleaned
