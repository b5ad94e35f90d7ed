"""Text cleaning before it is sent to the TTS (docs/services.md). Pure.

LLM output contains Markdown emphasis and typographic quotes that the TTS would either read out
or choke on. The rules are the original's: strip surrounding whitespace; delete ``*``, ``_`` and
backticks; map curly quotes to straight ones; turn a free-standing colon (``" : "``) into a space.
The server normalises further on its side (dashes, parentheses, ``:``); we do not duplicate that.

One deliberate difference: the result is stripped once more at the end, so text made only of
removed characters and spaces (``"* *"``) comes out empty and is not sent at all. The TTS splits
text on whitespace, so leading or trailing spaces never carried meaning.
"""

from __future__ import annotations

_DELETED = str.maketrans("", "", "*_`")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def clean_text_for_tts(text: str) -> str:
    """Return ``text`` as it should be sent to the TTS; ``""`` means "send nothing"."""
    text = text.strip().translate(_DELETED).translate(_QUOTES)
    return text.replace(" : ", " ").strip()
