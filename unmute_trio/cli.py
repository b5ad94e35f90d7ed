"""Command line: ``unmute-trio <command>`` (also ``python -m unmute_trio``).

Commands are registered in :data:`COMMANDS`; each adds its arguments to a subparser and returns a
process exit code. ``serve`` runs the server; ``sim`` runs the protocol-exact service simulators.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from unmute_trio import __version__
from unmute_trio.settings import Settings, SettingsError
from unmute_trio.voices import VoiceFileError

log = logging.getLogger("unmute_trio")


def setup_logging(level: str = "INFO") -> None:
    """The server's logging (``web.app.configure_logging``, which ``unmute_trio.asgi`` uses too)."""
    from unmute_trio.web.app import configure_logging

    configure_logging(level)


# ------------------------------------------------------------------ serve


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 0.0.0.0, or the config's bind)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument(
        "--config", type=Path, help="hypercorn TOML file (see hypercorn.toml in the repository)"
    )


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"unmute-trio: configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    from hypercorn.config import Config

    from unmute_trio.web.drain import prepare_metrics_dir, serve_workers

    # Before any metric exists in this process: files of a previous run would be summed.
    prepare_metrics_dir(wipe=True)
    from unmute_trio.web.app import create_app
    from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES

    try:
        app = create_app(settings)
    except VoiceFileError as e:
        print(f"unmute-trio: voice list error: {e}", file=sys.stderr)
        return 2
    if args.config is not None:
        try:
            config = Config.from_toml(args.config)
        except (OSError, ValueError) as e:
            print(f"unmute-trio: cannot read {args.config}: {e}", file=sys.stderr)
            return 2
    else:
        config = Config()
        config.bind = ["0.0.0.0:8000"]
        config.accesslog = "-"
        config.errorlog = "-"
        config.graceful_timeout = 10
        config.websocket_max_message_size = MAX_CLIENT_FRAME_BYTES
    if args.host is not None or args.port is not None or args.config is None:
        host = args.host or "0.0.0.0"
        port = 8000 if args.port is None else args.port
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if config.errorlog == "-":
        # hypercorn's lines ("Running on ...") in the server's format, printed once.
        config.errorlog = logging.getLogger("hypercorn.error")
    failure = _cannot_listen(config)
    if failure is not None:
        print(f"unmute-trio serve: {failure}", file=sys.stderr)
        return 1
    if config.workers > 1:
        return serve_workers(config)  # hypercorn's supervisor; see docs/deployment.md
    # Everything created so far (imports, the app) lives as long as the process: keep it out of
    # every later full garbage collection, which otherwise rescans ~70k objects (a 36 ms pause
    # was seen under load). Only in this single-process path: with hypercorn's workers the
    # children build their own app.
    gc.collect()
    gc.freeze()
    try:
        trio.run(_serve, app, config)
    except (OSError, BaseExceptionGroup) as e:
        # Listening was checked above, but another process may have taken the port since.
        error = _bind_error(e)
        if error is None:
            raise
        print(f"unmute-trio serve: {_listen_message(config, error)}", file=sys.stderr)
        return 1
    return 0


BIND_ERRNOS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def _cannot_listen(config: Any) -> str | None:
    """Why the server could not listen on its addresses, checked before it starts (so a busy
    port is one line, not hypercorn's traceback after the start-up lines); None if it can."""
    try:
        sockets = config.create_sockets()
    except OSError as e:
        return _listen_message(config, e)
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()
    return None


def _bind_error(error: BaseException) -> OSError | None:
    """The failure to bind a listening socket that ``error`` is (or is a group of), else None."""
    from unmute_trio.exception_groups import leaves

    found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    real = [e for e in found if not isinstance(e, trio.Cancelled)]
    if len(real) == 1 and isinstance(real[0], OSError) and real[0].errno in BIND_ERRNOS:
        return real[0]
    return None


def _listen_message(config: Any, error: OSError) -> str:
    from unmute_trio.web.app import cannot_listen_message

    binds = [*config.bind, *config.insecure_bind, *config.quic_bind]
    if len(binds) == 1:
        return cannot_listen_message(binds[0], error, "--port")
    return f"cannot listen on one of {', '.join(binds)}: {error.strerror or error}"


async def _serve(app: Any, config: object) -> None:
    from hypercorn.trio import serve

    from unmute_trio.web.drain import drain_on_signals

    # SIGTERM/SIGINT drain the sessions first (web/drain.py); then hypercorn stops.
    trigger = functools.partial(drain_on_signals, app.extensions["unmute"].drain)
    await serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]  # hypercorn types the app as its own ASGI framework union


# ------------------------------------------------------------------ sim


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    from unmute_trio.testing.sims import add_sim_arguments as add

    add(parser)


def run_sim(args: argparse.Namespace) -> int:
    from unmute_trio.testing.sims import run_sim_command

    return run_sim_command(args)


# ------------------------------------------------------------------ engines


def add_engines_arguments(parser: argparse.ArgumentParser) -> None:
    from unmute_trio.engines.command import add_engines_arguments as add

    add(parser)


def run_engines(args: argparse.Namespace) -> int:
    from unmute_trio.engines.command import run_engines_command

    return run_engines_command(args)


# ------------------------------------------------------------------ up


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    from unmute_trio.launcher import add_up_arguments as add

    add(parser)


def run_up(args: argparse.Namespace) -> int:
    from unmute_trio.launcher import run_up_command

    return run_up_command(args)


# ------------------------------------------------------------------ loadtest


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    from unmute_trio.loadtest.command import add_loadtest_arguments as add

    add(parser)


def run_loadtest(args: argparse.Namespace) -> int:
    from unmute_trio.loadtest.command import run_loadtest_command

    return run_loadtest_command(args)


# ------------------------------------------------------------------ dispatch

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: list[Command] = [
    ("serve", add_serve_arguments, run_serve),
    ("sim", add_sim_arguments, run_sim),
    ("engines", add_engines_arguments, run_engines),
    ("up", add_up_arguments, run_up),
    ("loadtest", add_loadtest_arguments, run_loadtest),
]

_HELP = {
    "serve": "run the voice server (HTTP + WebSocket /v1/realtime) under hypercorn",
    "sim": "run simulated STT, TTS, LLM and voice-cloning services on the default ports "
    "(scripted words and a hum, not real speech)",
    "up": "run the whole stack on this machine: local engines where no service is configured, "
    "then the server (what `make run` does)",
    "engines": "run the local CPU speech engines (Moonshine STT, Piper TTS) on the default ports",
    "loadtest": "simulate concurrent voice conversations against a server; report latencies",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unmute-trio",
        description="Real-time voice conversations with an LLM (Unmute-compatible, on trio).",
    )
    parser.add_argument("--version", action="version", version=f"unmute-trio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
