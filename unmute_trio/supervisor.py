"""Supervised child processes for ``unmute-trio up`` (launcher.py): started in their own
session with a parent-death signal and a niceness, their output echoed with a prefix and its
tail kept, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

TAIL_LINES = 20  # a dead child's last lines, kept to explain its death
STOP_GRACE_S = 15.0  # the server's drain (10 s by default) must fit

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # Linux: prctl; elsewhere the call is skipped


def _child_setup(niceness: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        # SIGTERM when the thread that forked us ends: children are started from the
        # launcher's main (trio) thread, which lives as long as the launcher, so an engine
        # never outlives a launcher that was killed outright.
        with contextlib.suppress(AttributeError, OSError):
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if niceness:
            os.nice(niceness)

    return setup


@dataclass(eq=False)
class Child:
    """One supervised child process.

    Started with :class:`subprocess.Popen` on the trio thread, not with ``trio.run_process``:
    trio forks from a worker thread, and the parent-death signal above fires when *that* thread
    ends (after ~10 s idle). Forking costs a few milliseconds, once per child.
    """

    label: str
    command: list[str]
    niceness: int = 0
    env: dict[str, str] | None = None
    echo: bool = True  # print its output lines (prefixed); always kept for the tail
    # SIGTERM → SIGKILL delay. llama-server busy with a long prompt ignores SIGTERM until it is
    # done (seconds), and has nothing to save: it gets a short one.
    stop_grace_s: float = STOP_GRACE_S
    popen: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    exited: trio.Event = field(default_factory=trio.Event)
    returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.popen = subprocess.Popen(  # noqa: ASYNC220 - on purpose, see the class docstring
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # a terminal's Ctrl-C reaches only the launcher
            preexec_fn=_child_setup(self.niceness),
        )
        assert self.popen.stdout is not None
        output = trio.lowlevel.FdStream(os.dup(self.popen.stdout.fileno()))
        self.popen.stdout.close()
        task_status.started()
        try:
            with self.scope:
                async with output:
                    await self._relay_output(output)
                await self._wait()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()
            self.returncode = self.popen.returncode
            self.exited.set()

    async def _wait(self) -> None:
        """Until the child has exited (and is reaped)."""
        assert self.popen is not None
        if self.popen.poll() is not None:
            return
        try:
            pidfd = os.pidfd_open(self.popen.pid)  # Linux ≥ 5.3: readable once it exits
        except (AttributeError, OSError):
            pidfd = None
        try:
            while self.popen.poll() is None:
                if pidfd is None:
                    await trio.sleep(0.05)
                else:
                    await trio.lowlevel.wait_readable(pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    async def _stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_grace_s``; returns once it has exited."""
        assert self.popen is not None
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        with trio.move_on_after(self.stop_grace_s):
            await self._wait()
            return
        self.popen.kill()
        await trio.to_thread.run_sync(self.popen.wait)

    async def _relay_output(self, output: trio.lowlevel.FdStream) -> None:
        pending = b""
        while chunk := await output.receive_some(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                self.tail.append(line)
                if self.echo:
                    print(f"[{self.label}] {line}", flush=True)
            if len(pending) > 65536:  # a very long line: keep memory bounded
                pending = pending[-65536:]


class ChildFailed(Exception):
    def __init__(self, child: Child, why: str) -> None:
        super().__init__(f"{child.label} {why}")
        self.child = child
