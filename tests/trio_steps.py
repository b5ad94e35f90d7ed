"""Counting a task's scheduling rounds: the tests of the hops that must not take one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


class TaskSteps(trio.abc.Instrument):
    """Counts how often the current task gives control back to the scheduler."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.yields = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.yields += 1


async def yields_of(operation: Callable[[], Awaitable[object]]) -> int:
    """How many scheduling rounds the current task takes while awaiting ``operation()``."""
    steps = TaskSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        await operation()
    finally:
        trio.lowlevel.remove_instrument(steps)
    return steps.yields
