"""``unmute-trio engines``: serve the local STT and TTS on the moshi-server default ports.

``unmute-trio serve`` reaches them like GPU moshi-servers (``KYUTAI_STT_URL`` defaults to
``ws://localhost:8090``, ``KYUTAI_TTS_URL`` to ``ws://localhost:8089``). Exit codes: 0 after
Ctrl-C or SIGTERM, 1 when a port cannot be bound, 2 for a bad option or missing local extra.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from unmute_trio.argtypes import positive_int

if TYPE_CHECKING:
    from unmute_trio.engines.stt_server import LocalSttEngine
    from unmute_trio.engines.tts_server import LocalTtsEngine

log = logging.getLogger("unmute_trio.engines")

DEFAULT_STT_PORT = 8090
DEFAULT_TTS_PORT = 8089


def add_engines_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--stt-port", type=int, default=DEFAULT_STT_PORT)
    parser.add_argument("--tts-port", type=int, default=DEFAULT_TTS_PORT)
    parser.add_argument(
        "--only", choices=("stt", "tts"), help="serve one engine (default: both, one process)"
    )
    parser.add_argument(
        "--api-key",
        default="public_token",
        help="the kyutai-api-key clients must send (default public_token, as moshi-server)",
    )
    parser.add_argument(
        "--capacity", type=positive_int, default=4, help="concurrent streams per engine"
    )
    parser.add_argument(
        "--voices",
        type=Path,
        default=Path("voices.yaml"),
        help="voices.yaml whose voice names are known (all are spoken by the local voice)",
    )
    parser.add_argument("--log-level", default="INFO")


@dataclass
class _Engines:
    stt: LocalSttEngine | None
    tts: LocalTtsEngine | None


def _load(args: argparse.Namespace) -> _Engines:
    """Load the models (a second or two each); raises WeightsError / ModuleNotFoundError."""
    stt: LocalSttEngine | None = None
    tts: LocalTtsEngine | None = None
    if args.only in (None, "stt"):
        from unmute_trio.engines.stt_server import LocalSttConfig, LocalSttEngine

        started = time.monotonic()
        stt = LocalSttEngine(LocalSttConfig(api_key=args.api_key, capacity=args.capacity))
        log.info("STT loaded: Moonshine base-en + Silero VAD in %.1f s", time.monotonic() - started)
    if args.only in (None, "tts"):
        from unmute_trio.engines.tts_server import LocalTtsConfig, LocalTtsEngine

        started = time.monotonic()
        known = _known_voices(args.voices)
        tts = LocalTtsEngine(
            LocalTtsConfig(api_key=args.api_key, capacity=args.capacity, known_voices=known)
        )
        log.info("TTS loaded: Piper en_US joe (medium) in %.1f s", time.monotonic() - started)
    return _Engines(stt, tts)


def _known_voices(path: Path) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    from unmute_trio.voices import VoiceFileError, load_voices

    try:
        voices = load_voices(path)
    except VoiceFileError as e:
        log.warning("ignoring %s: %s", path, e)
        return frozenset()
    names = {v.source.path_on_server for v in voices if v.source.path_on_server}
    return frozenset(names)


def run_engines_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from unmute_trio.engines.weights import WeightsError

    try:
        engines = _load(args)
    except ModuleNotFoundError as e:
        print(
            f"unmute-trio engines: {e.name} is not installed; install the local engines with "
            ".venv/bin/pip install -e '.[local]'",
            file=sys.stderr,
        )
        return 2
    except WeightsError as e:
        print(f"unmute-trio engines: {e}", file=sys.stderr)
        return 2
    failure: BaseExceptionGroup[OSError] | None = None
    try:
        trio.run(_serve_until_signal, engines, args)
    except* OSError as group:
        failure = group
    if failure is not None:
        reasons = "; ".join(str(e) for e in failure.exceptions)
        print(f"unmute-trio engines: cannot start: {reasons}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(engines: _Engines, args: argparse.Namespace) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            served = [("STT", engines.stt, args.stt_port), ("TTS", engines.tts, args.tts_port)]
            for name, engine, port in served:
                if engine is not None:
                    bound = await nursery.start(engine.serve, args.host, port)
                    print(f"local {name} (moshi-server protocol) on ws://{args.host}:{bound}")
            print("Local engines running; `unmute-trio serve` uses them by default. Ctrl-C stops.")
            sys.stdout.flush()
            async for signum in signals:
                log.info("%s received, stopping the engines", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
