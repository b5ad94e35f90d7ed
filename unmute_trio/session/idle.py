"""The idle watch: when a session's client has sent nothing for too long.

Each session holds one of ``UNMUTE_MAX_SESSIONS`` slots, so a client that upgrades and then
sends nothing must not keep one (issue 15). Two limits, on trio's clock (settings.py says why
these defaults):

- ``first_event_timeout_s`` (15 s), from the session's start until the client opens the
  conversation: its ``session.update`` in the Unmute dialect (the frontend sends it the moment
  the socket opens; audio alone does not count), any client event in the OpenAI dialect (its
  clients need not ever send ``session.update``);
- ``client_idle_timeout_s`` (120 s), then and always: the longest the client reader may wait
  for a frame while no bot reply runs. A reply being produced or spoken, or a frame still being
  handled (audio held back by a full STT queue), is not the client's silence.

Any frame counts, even one answered with an ``invalid_request_error``; WebSocket pings are
answered by hypercorn, never reach the application and do not. The deadlines are checked
lazily: a frame costs two clock reads, and the watch wakes at most once per limit.

The session closes with 1008 and the reason of :class:`SilenceClose`, after a ``fatal`` error
(docs/protocol.md section 6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio

# The `code` of the error event sent before the close.
FIRST_EVENT_TIMEOUT_CODE = "first_event_timeout"
CLIENT_IDLE_TIMEOUT_CODE = "client_idle_timeout"


@dataclasses.dataclass(frozen=True)
class SilenceClose:
    message: str  # of the fatal error event
    error_code: str
    reason: str  # of the close frame (code 1008)


class ClientSilence:
    def __init__(
        self, first_event_timeout_s: float, client_idle_timeout_s: float, *, opening_event: str
    ) -> None:
        """``opening_event``: what the first limit waits for, as the reason names it
        (``session.update`` or ``client event``)."""
        self.first_s = first_event_timeout_s
        self.idle_s = client_idle_timeout_s
        self.opening_event = opening_event
        self.frames = 0
        self._reading_since: float | None = None  # None while no frame is awaited
        self._reply_ended_at = float("-inf")

    # Around each wait for the client's next frame: ``reading_started()`` before it,
    # ``reading_ended()`` in a ``finally`` after it. Two calls rather than a context manager:
    # this runs for every client frame (25 a second per session), and a generator-based
    # context manager cost ~2 µs each time.
    def reading_started(self) -> None:
        self._reading_since = trio.current_time()

    def reading_ended(self) -> None:
        self._reading_since = None
        self.frames += 1

    def reply_ended(self) -> None:
        self._reply_ended_at = trio.current_time()

    def quiet_since(self, *, replying: bool) -> float | None:
        """Since when the client has owed the server a frame, or ``None`` if it does not now."""
        if self._reading_since is None or replying:
            return None
        return max(self._reading_since, self._reply_ended_at)

    async def wait_expired(
        self, *, opened: Callable[[], bool], replying: Callable[[], bool]
    ) -> SilenceClose:
        """Return once a limit is over; ``opened``: the client opened the conversation;
        ``replying``: a bot reply runs."""
        first_deadline = trio.current_time() + self.first_s
        while True:
            now = trio.current_time()
            is_open = opened()
            if not is_open and now >= first_deadline:
                return SilenceClose(
                    f"No {self.opening_event} arrived within {self.first_s:g} s of connecting, "
                    "so the server closed the connection.",
                    FIRST_EVENT_TIMEOUT_CODE,
                    f"no {self.opening_event} within {self.first_s:g} s",
                )
            quiet = self.quiet_since(replying=replying())
            if quiet is not None and now >= quiet + self.idle_s:
                return SilenceClose(
                    f"The client sent nothing for {self.idle_s:g} s, so the server closed the "
                    "connection.",
                    CLIENT_IDLE_TIMEOUT_CODE,
                    f"client idle for {self.idle_s:g} s",
                )
            # The earliest moment a limit can be over: a silence starting now ends no sooner.
            wake = (now if quiet is None else quiet) + self.idle_s
            if not is_open:
                wake = min(wake, first_deadline)
            await trio.sleep_until(wake)
