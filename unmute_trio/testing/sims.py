"""Run the four simulated services together: ``unmute-trio sim``.

They listen on the original's dockerless default ports (STT 8090, TTS 8089, LLM 8091, voice
cloning 8092, docs/deployment.md), which are also our settings' defaults, so ``unmute-trio serve``
with no configuration talks to them. On other ports (or another interface) the command prints the
``KYUTAI_*_URL`` variables that point the server at them. Tests use :func:`run_simulators` with
every port 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

import trio

from unmute_trio.argtypes import non_negative_float, positive_float, positive_int
from unmute_trio.exception_groups import leaves
from unmute_trio.services import ws_masking
from unmute_trio.testing.llm_sim import LlmSimConfig, LlmSimulator
from unmute_trio.testing.sim_base import ServedSimulator
from unmute_trio.testing.stt_sim import SttSimConfig, SttSimulator
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator
from unmute_trio.testing.voice_cloning_sim import VoiceCloningSimConfig, VoiceCloningSimulator

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SimsConfig:
    host: str = "127.0.0.1"
    stt_port: int = 8090
    tts_port: int = 8089
    llm_port: int = 8091
    voice_cloning_port: int = 8092
    stt: SttSimConfig = dataclasses.field(default_factory=SttSimConfig)
    tts: TtsSimConfig = dataclasses.field(default_factory=TtsSimConfig)
    llm: LlmSimConfig = dataclasses.field(default_factory=LlmSimConfig)
    voice_cloning: VoiceCloningSimConfig = dataclasses.field(default_factory=VoiceCloningSimConfig)


@dataclasses.dataclass(frozen=True)
class RunningSims:
    """The simulators started by :func:`run_simulators` and the ports they bound."""

    host: str
    stt: SttSimulator
    tts: TtsSimulator
    llm: LlmSimulator
    voice_cloning: VoiceCloningSimulator
    stt_port: int
    tts_port: int
    llm_port: int
    voice_cloning_port: int

    @property
    def stt_url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.stt_port}"

    @property
    def tts_url(self) -> str:
        return f"ws://{_url_host(self.host)}:{self.tts_port}"

    @property
    def llm_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.llm_port}"

    @property
    def voice_cloning_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.voice_cloning_port}"

    def environment(self) -> dict[str, str]:
        """The variables that point ``unmute-trio serve`` at these simulators."""
        return {
            "KYUTAI_STT_URL": self.stt_url,
            "KYUTAI_TTS_URL": self.tts_url,
            "KYUTAI_LLM_URL": self.llm_url,
            "KYUTAI_VOICE_CLONING_URL": self.voice_cloning_url,
        }

    def describe(self) -> list[str]:
        """One line per simulator: name, URL and the variable that points the server at it."""
        labels = ("STT", "TTS", "LLM", "voice cloning")
        return [
            f"{label:<14} {url:<28} ({variable})"
            for label, (variable, url) in zip(labels, self.environment().items(), strict=True)
        ]

    @property
    def server_finds_them(self) -> bool:
        """Whether ``unmute-trio serve`` with no ``KYUTAI_*_URL`` set reaches these simulators:
        they are on the default ports, on an interface that ``localhost`` reaches."""
        d = SimsConfig()
        defaults = (d.stt_port, d.tts_port, d.llm_port, d.voice_cloning_port)
        ports = (self.stt_port, self.tts_port, self.llm_port, self.voice_cloning_port)
        return ports == defaults and self.host in ("127.0.0.1", "localhost", "0.0.0.0", "")

    def announcement(self) -> list[str]:
        """What ``unmute-trio sim`` prints once the simulators listen."""
        if self.server_finds_them:
            lines = [
                *self.describe(),
                "Simulators running on the server's default ports: `unmute-trio serve` (and "
                "`make run`) use them with no configuration. Ctrl-C stops.",
            ]
        else:
            lines = [
                *(f"export {variable}={url}" for variable, url in self.environment().items()),
                "Simulators running on other ports than the server's defaults: set the variables"
                " above (paste the lines) in the shell that runs `unmute-trio serve` or "
                "`make run`. Ctrl-C stops.",
            ]
        lines.append(
            "These are protocol simulators, not speech engines: the STT replays scripted "
            "words whatever you say, the TTS hums, the LLM echoes. For a real conversation "
            "on this machine run `make run` (local engines) instead."
        )
        return lines

    def open_connections(self) -> dict[str, int]:
        return {
            "stt": self.stt.open_connections,
            "tts": self.tts.open_connections,
            "llm": self.llm.open_connections,
            "voice_cloning": self.voice_cloning.open_connections,
        }


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"  # bound on every interface; loopback is one of them
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class CannotListen(OSError):
    """A simulator cannot listen on its port: the message names the port, the simulator and
    the option that picks another port."""

    def __init__(self, role: str, host: str, port: int, error: OSError) -> None:
        from unmute_trio.web.app import cannot_listen_message

        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        message = cannot_listen_message(bind, error, f"--{role}-port")
        label = "voice-cloning" if role == "voice-cloning" else role.upper()
        super().__init__(error.errno, f"the {label} simulator: {message}")
        self.role = role
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


async def run_simulators(
    config: SimsConfig, *, task_status: trio.TaskStatus[RunningSims] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve all four simulators until cancelled; ``task_status.started`` gets them and their
    bound ports (pass port 0 to let the system choose)."""
    ws_masking.apply()  # the sessions' 9.6 KB STT frames are unmasked here
    stt = SttSimulator(config.stt)
    tts = TtsSimulator(config.tts)
    llm = LlmSimulator(config.llm)
    voice_cloning = VoiceCloningSimulator(config.voice_cloning)
    async with trio.open_nursery() as nursery:

        async def start(sim: ServedSimulator, port: int, role: str) -> int:
            try:
                bound: int = await nursery.start(sim.serve, config.host, port)
            except (OSError, BaseExceptionGroup) as e:
                failures = leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
                failure = next((f for f in failures if isinstance(f, OSError)), None)
                if failure is None:
                    raise
                raise CannotListen(role, config.host, port, failure) from e
            return bound

        stt_port = await start(stt, config.stt_port, "stt")
        tts_port = await start(tts, config.tts_port, "tts")
        llm_port = await start(llm, config.llm_port, "llm")
        voice_cloning_port = await start(voice_cloning, config.voice_cloning_port, "voice-cloning")
        task_status.started(
            RunningSims(
                config.host,
                stt,
                tts,
                llm,
                voice_cloning,
                stt_port,
                tts_port,
                llm_port,
                voice_cloning_port,
            )
        )


# ------------------------------------------------------------------ command line


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``unmute-trio sim``."""
    d = SimsConfig()
    parser.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    parser.add_argument("--stt-port", type=int, default=d.stt_port, help="(default %(default)s)")
    parser.add_argument("--tts-port", type=int, default=d.tts_port, help="(default %(default)s)")
    parser.add_argument("--llm-port", type=int, default=d.llm_port, help="(default %(default)s)")
    parser.add_argument(
        "--voice-cloning-port", type=int, default=d.voice_cloning_port, help="(default %(default)s)"
    )
    parser.add_argument(
        "--capacity",
        type=positive_int,
        default=d.stt.capacity,
        help="concurrent streams the STT and the TTS each accept (default %(default)s)",
    )
    parser.add_argument(
        "--kyutai-api-key",
        default=d.stt.api_key,
        help="the API key the STT and TTS require (default %(default)s)",
    )
    parser.add_argument(
        "--llm-model", default=d.llm.model, help="model name the LLM lists (default %(default)s)"
    )
    parser.add_argument(
        "--llm-ttft",
        type=non_negative_float,
        default=d.llm.ttft_s,
        metavar="SECONDS",
        help="LLM time to first token (default %(default)s)",
    )
    parser.add_argument(
        "--llm-tokens-per-second",
        type=positive_float,
        default=d.llm.tokens_per_s,
        help="LLM streaming speed (default %(default)s)",
    )
    parser.add_argument(
        "--llm-replies",
        type=Path,
        metavar="FILE",
        help='JSON object {"exact user message": "reply", ...} overriding the default replies',
    )
    parser.add_argument(
        "--tts-realtime-factor",
        type=positive_float,
        default=d.tts.realtime_factor,
        help="how much faster than real time the TTS generates audio (default %(default)s)",
    )
    parser.add_argument(
        "--voice-cloning-delay",
        type=non_negative_float,
        default=d.voice_cloning.delay_s,
        metavar="SECONDS",
        help="delay before each voice-cloning answer (default %(default)s)",
    )
    parser.add_argument(
        "--script",
        type=Path,
        metavar="FILE",
        help="what the simulated user says: one utterance per line, used in turn by the STT",
    )
    parser.add_argument(
        "--status-interval",
        type=non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="log the open connections of each simulator this often (default 0: never)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default %(default)s)",
    )


def sims_config_from_args(args: argparse.Namespace) -> SimsConfig:
    """Build the configuration; ``ValueError`` names a bad option or file."""
    stt = dataclasses.replace(SttSimConfig(), capacity=args.capacity, api_key=args.kyutai_api_key)
    if args.script is not None:
        stt = dataclasses.replace(stt, script=_read_script(args.script))
    tts = dataclasses.replace(
        TtsSimConfig(),
        capacity=args.capacity,
        api_key=args.kyutai_api_key,
        realtime_factor=args.tts_realtime_factor,
    )
    llm = LlmSimConfig(
        model=args.llm_model,
        ttft_s=args.llm_ttft,
        tokens_per_s=args.llm_tokens_per_second,
        replies=_read_replies(args.llm_replies) if args.llm_replies is not None else None,
    )
    return SimsConfig(
        host=args.host,
        stt_port=args.stt_port,
        tts_port=args.tts_port,
        llm_port=args.llm_port,
        voice_cloning_port=args.voice_cloning_port,
        stt=stt,
        tts=tts,
        llm=llm,
        voice_cloning=VoiceCloningSimConfig(delay_s=args.voice_cloning_delay),
    )


def run_sim_command(args: argparse.Namespace) -> int:
    """``unmute-trio sim``: serve the four simulators until Ctrl-C or SIGTERM; 0 on a clean
    stop, 1 if they cannot start (port in use...), 2 for a bad option or file."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = sims_config_from_args(args)
    except ValueError as e:
        print(f"unmute-trio sim: {e}", file=sys.stderr)
        return 2
    failure: BaseExceptionGroup[OSError] | None = None
    try:
        trio.run(_serve_until_signal, config, args.status_interval)
    except* OSError as group:
        failure = group
    if failure is not None:
        reasons = "; ".join(str(e) for e in leaves(failure))
        print(f"unmute-trio sim: cannot start the simulators: {reasons}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(config: SimsConfig, status_interval_s: float) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: RunningSims = await nursery.start(run_simulators, config)
            for line in running.announcement():
                print(line)
            sys.stdout.flush()
            if status_interval_s > 0:
                nursery.start_soon(_log_status, running, status_interval_s)
            async for signum in signals:
                logger.info("%s received, stopping the simulators", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()


async def _log_status(running: RunningSims, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        counts = ", ".join(f"{k}={v}" for k, v in running.open_connections().items())
        logger.info("open connections: %s", counts)


def _read_script(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the script {path}: {e.strerror}") from e
    utterances = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not utterances:
        raise ValueError(f"the script {path} has no utterance (one per line)")
    return utterances


def _read_replies(path: Path) -> dict[str, str]:
    try:
        replies = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read the replies {path}: {e.strerror}") from e
    except ValueError as e:
        raise ValueError(f"the replies {path} are not JSON: {e}") from e
    if not isinstance(replies, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in replies.items()
    ):
        raise ValueError(f'the replies {path} must be a JSON object {{"message": "reply"}}')
    return replies
