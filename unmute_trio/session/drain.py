"""The drain state of one process: is the server shutting down, by when must sessions end,
and how many are still open. Pure trio state; who starts a drain (signals, hypercorn) and how
HTTP requests are refused during one is the web layer's (web/drain.py, which documents the
whole behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

log = logging.getLogger(__name__)

CLOSE_REASON = "server shutting down"
ERROR_CODE = "server_shutting_down"
GOODBYE_MESSAGE = "The server is restarting, so this conversation has ended. Please reconnect."
REFUSAL_MESSAGE = "This server is restarting and takes no new conversations. Please try again."
# After the deadline, sessions still need a moment to send their close frame.
CLOSING_GRACE_S = 1.0


class RunningCount:
    """How many things (sessions, turns) are running, and a way to wait until none is."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def started(self) -> None:
        if self.count == 0:
            self._idle = trio.Event()
        self.count += 1

    def finished(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    @contextmanager
    def running(self) -> Iterator[None]:
        self.started()
        try:
            yield
        finally:
            self.finished()

    async def wait_idle(self) -> None:
        while self.count:
            await self._idle.wait()


class Drain:
    """The drain state of one app (one process). ``begin`` is idempotent."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self.sessions = RunningCount()
        self.deadline = float("inf")
        self.reason = ""
        self._started = trio.Event()

    @property
    def started(self) -> bool:
        return self._started.is_set()

    def begin(self, reason: str) -> None:
        """Start draining now (call from inside the trio run)."""
        if self.started:
            return
        self.reason = reason
        self.deadline = trio.current_time() + self.timeout_s
        log.info(
            "draining (%s): %d open sessions get up to %.1f s to finish their reply",
            reason,
            self.sessions.count,
            self.timeout_s,
        )
        self._started.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def wait_sessions_closed(self) -> bool:
        """Wait until every session has closed, at most until shortly after the deadline.
        Returns whether they all did."""
        with trio.move_on_at(self.deadline + CLOSING_GRACE_S):
            await self.sessions.wait_idle()
            return True
        log.warning("drain deadline passed with %d sessions still open", self.sessions.count)
        return False

    # What sessions tell their clients, in whichever protocol they speak (``fatal`` errors).
    goodbye_message = GOODBYE_MESSAGE
    refusal_message = REFUSAL_MESSAGE
    error_code = ERROR_CODE
