"""Limits on the JSON of a client frame, shared by both client dialects.

The Unmute dialect (:mod:`.browser`) and the OpenAI dialect (:mod:`.openai_client_events`)
decode every WebSocket text frame with :func:`loads` and then check the decoded tree with
:func:`check_tree`, before any model sees the data:

- a frame longer than :data:`MAX_FRAME_CHARS` characters is refused unparsed;
- JSON nested deeper than :data:`MAX_JSON_DEPTH` levels of objects and arrays is refused. A
  pathological ``[[[[...`` that exhausts the JSON parser's recursion (``RecursionError``) is
  reported the same way instead of escaping as an internal error;
- a string or a key holding a lone UTF-16 surrogate (``"\\ud800"``) is refused: it is not valid
  Unicode text and cannot be encoded as UTF-8, so it would break the reply, the LLM request or
  the log line that carries it later;
- an integer literal longer than Python's integer-conversion limit (4300 digits by default,
  ``sys.get_int_max_str_digits``) is refused; the parser would raise a plain ``ValueError``.

A problem is raised as :class:`JsonLimitError` with a code, a message and the path of the
offending value; each dialect turns it into its own ``error`` event. Text that is not JSON at
all still raises ``json.JSONDecodeError``, which each dialect words its own way.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

# The WebSocket route's own frame limit (web.realtime.MAX_CLIENT_FRAME_BYTES, 1 MiB); repeated
# here so the codecs hold the bound even when driven without that route. 1 MiB of base64 is
# 16 s of 24 kHz PCM16 in one append; clients send 20-100 ms chunks.
MAX_FRAME_CHARS = 1_048_576
# Real events nest 6 deep, a tool's JSON Schema a few more; 64 leaves room for any honest schema.
MAX_JSON_DEPTH = 64

FRAME_TOO_LARGE = "frame_too_large"
NESTING_TOO_DEEP = "nesting_too_deep"
INVALID_STRING = "invalid_string"  # a lone UTF-16 surrogate (\ud800 escape)
NUMBER_TOO_LONG = "number_too_long"  # an integer with more digits than Python converts

_SURROGATE = re.compile("[\ud800-\udfff]")

Path = tuple[str | int, ...]


class JsonLimitError(ValueError):
    """A frame over one of this module's limits: ``code`` (one of the constants above), a
    ``message`` that never quotes the client's data, and the ``path`` of the offending value
    (empty for the frame as a whole)."""

    def __init__(self, code: str, message: str, path: Path = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


def loads(text: str) -> Any:
    """``json.loads`` of one client frame, within :data:`MAX_FRAME_CHARS` characters and
    without letting deep nesting exhaust the parser's recursion.

    Raises :class:`JsonLimitError` for a frame too large, nested too deep for the parser or
    holding an integer too long to convert, ``json.JSONDecodeError`` for text that is not JSON.
    Nesting the parser survives is checked by :func:`check_tree`.
    """
    if len(text) > MAX_FRAME_CHARS:
        raise JsonLimitError(
            FRAME_TOO_LARGE,
            f"The event is {len(text)} characters long; the limit is {MAX_FRAME_CHARS}."
            " Send audio in smaller chunks.",
        )
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonLimitError(NESTING_TOO_DEEP, nesting_message()) from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # The only other ValueError json.loads raises on a str: int() refusing a number with
        # more digits than sys.get_int_max_str_digits() (a guard against quadratic conversion).
        raise JsonLimitError(
            NUMBER_TOO_LONG,
            f"A number in the event has more than {sys.get_int_max_str_digits()} digits.",
        ) from None


def check_tree(data: Any) -> None:
    """Raise :class:`JsonLimitError` for the first nesting or lone-surrogate problem in
    decoded JSON, with its path.

    Iterative, so a deep tree cannot exhaust the stack here either. ``str.isascii`` is O(1)
    in CPython, so a large base64 audio string costs nothing to check.
    """
    stack: list[tuple[Any, int, Path]] = [(data, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_JSON_DEPTH:
                raise JsonLimitError(NESTING_TOO_DEEP, nesting_message())
            for key, value in node.items():
                if has_lone_surrogate(key):
                    # The key itself cannot go into the message: it is not encodable.
                    raise JsonLimitError(INVALID_STRING, surrogate_message("A key"), path)
                stack.append((value, depth + 1, (*path, key)))
        elif isinstance(node, list):
            if depth > MAX_JSON_DEPTH:
                raise JsonLimitError(NESTING_TOO_DEEP, nesting_message())
            stack.extend((value, depth + 1, (*path, i)) for i, value in enumerate(node))
        elif isinstance(node, str) and has_lone_surrogate(node):
            raise JsonLimitError(INVALID_STRING, surrogate_message("The string"), path)


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate code point (only a JSON escape can put one
    there: a well-formed pair is decoded into one character)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def nesting_message() -> str:
    return f"The event nests deeper than {MAX_JSON_DEPTH} levels of objects and arrays."


def surrogate_message(what: str) -> str:
    return (
        f"{what} contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape),"
        " which is not valid Unicode text."
    )


def format_path(loc: Sequence[str | int]) -> str:
    """``("session", "tools", 2, "name")`` → ``session.tools[2].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
