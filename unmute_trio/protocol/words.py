"""Re-segment a stream of LLM text deltas into whole words for the TTS (docs/services.md).

LLM tokens cut words anywhere (``"hel"``, ``"lo"``); a streaming TTS given half a word
mispronounces it, so words are passed on only once the whitespace after them has arrived.

The rules are Unmute's ``rechunk_to_words``, exactly:

- deltas accumulate in a buffer; every run of whitespace (``\\s+``) in it ends a word;
- the text before the run, if not empty, is emitted with the current prefix, and from the first
  whitespace run on (even one with nothing before it) the prefix is a single ``" "``;
- at the end of the stream a non-empty remainder is emitted with the prefix.

So ``"i am ok"`` gives ``["i", " am", " ok"]`` and ``" i am ok"`` gives ``[" i", " am", " ok"]``:
any whitespace run collapses to one leading space, and punctuation stays attached to its word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WHITESPACE_RUN = re.compile(r"\s+")


class WordChunker:
    """Incremental word re-chunker: ``feed`` deltas, then ``finish`` once.

    ``max_word_chars`` (default ``None``: unbounded, as in the original) caps the buffer: a
    "word" that grows past it without any whitespace is emitted as it stands, so a server that
    never sends a space cannot grow memory without limit. No real word comes near the cap
    the client uses.
    """

    def __init__(self, *, max_word_chars: int | None = None) -> None:
        if max_word_chars is not None and max_word_chars < 1:
            raise ValueError("max_word_chars must be at least 1")
        self._buffer = ""
        self._prefix = ""
        self._max_word_chars = max_word_chars
        self._finished = False

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the words it completed (possibly none)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buffer += delta
        words: list[str] = []
        while (match := _WHITESPACE_RUN.search(self._buffer)) is not None:
            word = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            if word:
                words.append(self._prefix + word)
            self._prefix = " "
        if self._max_word_chars is not None and len(self._buffer) > self._max_word_chars:
            words.append(self._prefix + self._buffer)
            self._buffer = ""
            self._prefix = " "
        return words

    def finish(self) -> list[str]:
        """End of stream: return the last word, if any. Calling it again returns nothing."""
        self._finished = True
        if not self._buffer:
            return []
        word = self._prefix + self._buffer
        self._buffer = ""
        return [word]


def rechunk_to_words(deltas: Iterable[str]) -> list[str]:
    """All the words of a complete sequence of deltas (convenience for tests and tools)."""
    chunker = WordChunker()
    words: list[str] = []
    for delta in deltas:
        words.extend(chunker.feed(delta))
    words.extend(chunker.finish())
    return words
