"""Graceful drain: finish the conversations in progress before the process exits.

Once a drain begins (SIGTERM or SIGINT, or hypercorn shutting down):

- **new sessions are refused clearly**: ``/v1/realtime`` accepts, sends an ``error`` event of
  type ``fatal`` (code ``server_shutting_down``) and closes with 1013 (Try Again Later), as it
  does when the process is full, so clients and load balancers move to another replica. HTTP
  requests other than ``/metrics`` get 503 with ``Retry-After``, so a proxy health check on
  ``/`` or ``/v1/health`` takes the replica out of rotation.
- **open sessions finish the bot reply being spoken** (no new reply starts), then get an
  ``error`` event saying the server is restarting and close code **1001** (Going Away) with the
  reason ``server shutting down``. A reply still running at the drain deadline
  (``UNMUTE_DRAIN_TIMEOUT_S`` after the signal) is cut there.

Who starts the drain depends on how the server runs:

- ``unmute-trio serve`` (one process): :func:`drain_on_signals` is hypercorn's shutdown trigger.
  The listener stays open during the drain, so late clients get the refusal above rather than a
  connection error; when every session has closed (or the deadline passed) the trigger returns
  and hypercorn stops, giving stragglers ``graceful_timeout`` more. A second signal skips ahead.
- ``hypercorn --config hypercorn.toml unmute_trio.asgi:app`` (and ``serve`` with workers > 1):
  the master process takes the signal and only tells its workers through a multiprocessing
  event, which the app cannot see, and ASGI ``lifespan.shutdown`` arrives only after every
  connection has ended or been cancelled — too late. So :func:`observe_hypercorn_shutdown`
  subclasses hypercorn's per-worker ``WorkerContext`` to hand the app its ``terminated`` event,
  which hypercorn sets as soon as it stops listening, before its ``graceful_timeout`` countdown.
  The drain then runs inside that countdown: keep ``graceful_timeout`` above the drain timeout.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import trio
from quart import Quart, request

from unmute_trio.session.drain import Drain

log = logging.getLogger(__name__)

# Told to HTTP clients refused during a drain; a restart or a move to another replica is quick.
RETRY_AFTER_S = 5
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def install_drain(app: Quart, drain: Drain) -> None:
    """HTTP refusal during a drain, the hypercorn shutdown watch, and multiprocess metrics
    clean-up at exit."""
    observe_hypercorn_shutdown()
    # One watch per time the app is served; ended when serving ends.
    watch_scopes: list[trio.CancelScope] = []

    @app.before_request
    async def refuse_while_draining() -> Any:
        if drain.started and request.path != "/metrics":
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            return {"detail": "The server is shutting down."}, 503, headers
        return None

    @app.before_serving
    async def watch_hypercorn_shutdown() -> None:
        context = _WORKER_CONTEXT.get(None)
        if context is None:
            log.debug("no hypercorn worker context: drain only on serve's own signal handling")
            return

        scope = trio.CancelScope()
        watch_scopes.append(scope)

        async def begin_when_terminated() -> None:
            with scope:
                await context.terminated.wait()
                drain.begin("hypercorn is shutting down")

        app.nursery.start_soon(begin_when_terminated)  # type: ignore[attr-defined]  # QuartTrio sets it while serving

    @app.after_serving
    async def stop_watching() -> None:
        for scope in watch_scopes:
            scope.cancel()
        watch_scopes.clear()
        if os.environ.get(METRICS_DIR_VARIABLE):
            from prometheus_client import multiprocess

            # Drops this process's live gauges from the sum (counters stay, as they must).
            multiprocess.mark_process_dead(os.getpid())


# ------------------------------------------------------------------ hypercorn's worker context

_WORKER_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar("hypercorn_worker_context")


def observe_hypercorn_shutdown() -> None:
    """Make each hypercorn trio worker publish its ``WorkerContext`` in a context variable.

    ``worker_serve`` creates the context in its own task before it starts the lifespan task, so
    the app's ``before_serving`` hook (in the lifespan task, which inherits a copy of the
    variables) finds the context of the server that runs it — also with several servers in one
    process, as in tests. Idempotent; must run before the server starts (at app creation).
    """
    from hypercorn.trio import run as hypercorn_run

    base = getattr(hypercorn_run, "WorkerContext", None)
    if base is None:  # pragma: no cover - a hypercorn without it: serve's signals still drain
        log.warning("hypercorn has no trio WorkerContext: drain only under unmute-trio serve")
        return
    if getattr(base, "_publishes_itself", False):
        return

    class PublishedWorkerContext(base):  # type: ignore[misc, valid-type]  # a class found at run time
        _publishes_itself = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _WORKER_CONTEXT.set(self)

    # A deliberate patch of hypercorn's class (see above); mypy sees a type being reassigned.
    hypercorn_run.WorkerContext = PublishedWorkerContext  # type: ignore[misc]


# ------------------------------------------------------------------ unmute-trio serve


async def drain_on_signals(drain: Drain) -> None:
    """hypercorn ``shutdown_trigger`` for one process: on SIGTERM or SIGINT, drain, then return
    (hypercorn then stops listening). A second signal returns at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            drain.begin(f"received {signal.Signals(signum).name}")
            break
        async with trio.open_nursery() as nursery:

            async def stop_on_second_signal() -> None:
                async for signum in signals:
                    log.warning("received %s again: stopping now", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_second_signal)
            await drain.wait_sessions_closed()
            nursery.cancel_scope.cancel()


def prepare_metrics_dir(*, wipe: bool) -> Path | None:
    """Create ``PROMETHEUS_MULTIPROC_DIR`` if needed; with ``wipe``, delete the metric files a
    previous run left (``*.db`` only). Must run before ``prometheus_client`` creates metrics
    in this process: a worker that finds a file named after its own pid continues its counts."""
    raw = os.environ.get(METRICS_DIR_VARIABLE)
    if not raw:
        return None
    path = Path(raw)
    path.mkdir(parents=True, exist_ok=True)
    if wipe:
        for file in path.glob("*.db"):
            file.unlink(missing_ok=True)
    return path


def serve_workers(config: Any) -> int:
    """``unmute-trio serve`` with ``workers > 1``: hypercorn's own supervisor, with the metrics
    directory wiped first (or a fresh temporary one when none is configured), so ``/metrics``
    sums every worker. Each worker imports ``unmute_trio.asgi:app`` and drains through
    :func:`observe_hypercorn_shutdown`."""
    from hypercorn.run import run

    created = None
    if not os.environ.get(METRICS_DIR_VARIABLE):
        created = tempfile.mkdtemp(prefix="unmute-trio-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = created  # inherited by the spawned workers
    prepare_metrics_dir(wipe=True)
    config.application_path = "unmute_trio.asgi:app"
    try:
        return run(config)
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
