"""Which protocol a client of ``/v1/realtime`` speaks, decided once at the handshake.

Both dialects share the URL. The rule, first match wins:

1. ``?dialect=unmute`` or ``?dialect=openai`` in the query: what it says;
2. a ``model`` query parameter: the OpenAI Realtime API (its SDKs always send one; Unmute's
   frontend never does);
3. the ``realtime`` subprotocol offered: the Unmute dialect (the Unmute frontend offers it);
4. anything else: the OpenAI Realtime API (its server-side SDKs offer no subprotocol).

Browser clients of the OpenAI API offer ``realtime`` too, but always with ``?model=``, so rule 2
sends them to the right place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

Dialect = Literal["unmute", "openai"]
DIALECTS: tuple[Dialect, ...] = ("unmute", "openai")
UNMUTE_SUBPROTOCOL = "realtime"


class UnknownDialect(ValueError):
    """``?dialect=`` names no dialect this server speaks."""


def choose_dialect(query: Mapping[str, str], subprotocols: Sequence[str]) -> Dialect:
    asked = query.get("dialect")
    if asked is not None:
        for dialect in DIALECTS:
            if asked == dialect:
                return dialect
        raise UnknownDialect(
            f"unknown dialect {asked!r}: use {' or '.join(repr(d) for d in DIALECTS)}"
        )
    if "model" in query:
        return "openai"
    if UNMUTE_SUBPROTOCOL in subprotocols:
        return "unmute"
    return "openai"
