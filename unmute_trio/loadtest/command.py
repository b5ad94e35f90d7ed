"""``unmute-trio loadtest``: options, run, outputs (table on stdout, progress on stderr, JSON
report and histogram files). Exit status 0 when every conversation succeeded, 1 when one failed
or the server is not healthy, 2 for bad options, 130 after Ctrl-C (the partial report is still
printed and written)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from pathlib import Path

import trio

from unmute_trio.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from unmute_trio.loadtest.floor import SimulatorLatencies
from unmute_trio.loadtest.report import LoadTestReport
from unmute_trio.loadtest.runner import (
    AUTO_VOICE,
    LoadTestConfig,
    LoadTestError,
    http_base,
    run_load_test,
)
from unmute_trio.loadtest.table import format_summary, write_histogram

HELP = "simulate N concurrent voice conversations against a server and report latencies"


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    d = LoadTestConfig(url="")
    sims = SimulatorLatencies()
    add = parser.add_argument
    add("--url", default="ws://localhost:8000/v1/realtime", help="(default %(default)s)")
    add("--users", type=positive_int, default=d.users, help="concurrent users (default 1)")
    add(
        "--conversations",
        type=positive_int,
        help="conversations in total, shared by the users (default: one per user)",
    )
    add(
        "--turns",
        type=non_negative_int,
        default=d.turns,
        help="user turns per conversation "
        "after the greeting, each answered by the bot (default %(default)s)",
    )
    add(
        "--speech-seconds",
        type=positive_float,
        default=d.speech_s,
        help="length of each user utterance, rounded up to 80 ms frames (default %(default)s)",
    )
    add(
        "--think-seconds",
        type=non_negative_float,
        default=d.think_s,
        help="silence between the end of the bot's playback and the user's next utterance "
        "(default %(default)s)",
    )
    add(
        "--ramp-seconds",
        type=non_negative_float,
        default=d.ramp_s,
        help="spread the users' first conversations over this long (default %(default)s)",
    )
    add(
        "--delay-seconds",
        type=non_negative_float,
        default=d.delay_s,
        help="wait this long before the first conversation (default %(default)s)",
    )
    add(
        "--turn-timeout",
        type=positive_float,
        default=d.turn_timeout_s,
        metavar="SECONDS",
        help="a reply not finished within this fails the conversation (default %(default)s)",
    )
    add(
        "--voice",
        default=AUTO_VOICE,
        help="voice for session.update; 'auto': the first of "
        "GET /v1/voices, as the original; 'none': the server's default (default %(default)s)",
    )
    add("--seed", type=int, default=d.seed, help="seed of the speech-like utterances")
    add(
        "--simulators",
        action="store_true",
        help="the services are `unmute-trio sim`: also report the backend-added latency "
        "(voice-to-voice minus the simulators' designed latency)",
    )
    add(
        "--sim-llm-ttft",
        type=non_negative_float,
        default=sims.llm_ttft_s,
        metavar="SECONDS",
        help="the simulated LLM's --llm-ttft (default %(default)s)",
    )
    add(
        "--sim-llm-tokens-per-second",
        type=positive_float,
        default=sims.llm_tokens_per_s,
        help="the simulated LLM's --llm-tokens-per-second (default %(default)s)",
    )
    add("--json", type=Path, metavar="FILE", help="write the full report (JSON) here")
    add("--png", type=Path, metavar="FILE", help="write a latency histogram (needs matplotlib)")
    add("--no-health-check", action="store_true", help="skip GET /v1/health")
    add("--quiet", action="store_true", help="no progress line on stderr")


def config_from_args(args: argparse.Namespace) -> LoadTestConfig:
    simulators = None
    if args.simulators:
        simulators = SimulatorLatencies(
            llm_ttft_s=args.sim_llm_ttft, llm_tokens_per_s=args.sim_llm_tokens_per_second
        )
    return LoadTestConfig(
        url=args.url,
        users=args.users,
        conversations=args.conversations,
        turns=args.turns,
        speech_s=args.speech_seconds,
        think_s=args.think_seconds,
        ramp_s=args.ramp_seconds,
        delay_s=args.delay_seconds,
        turn_timeout_s=args.turn_timeout,
        voice=None if args.voice.lower() == "none" else args.voice,
        simulators=simulators,
        seed=args.seed,
        check_health=not args.no_health_check,
    )


def run_loadtest_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # The objects of the imports live as long as the process: take them out of the garbage
    # collector's full passes, whose pauses would show up as audio gaps that are not the
    # server's.
    gc.collect()
    gc.freeze()
    failure: BaseException | None = None
    report: LoadTestReport | None = None
    try:
        http_base(config.url)  # a bad URL is reported before anything starts
        report = trio.run(_run_until_interrupted, config, args.quiet)
    except* LoadTestError as group:  # raised inside the run's nursery: a group
        failure = group.exceptions[0]
    if failure is not None:
        print(f"unmute-trio loadtest: {failure}", file=sys.stderr)
        return 1
    if report is None:
        print("unmute-trio loadtest: interrupted before it started", file=sys.stderr)
        return 130
    print(format_summary(report))
    if args.json is not None:
        args.json.write_text(report.model_dump_json(indent=1), encoding="utf-8")
        print(f"report written to {args.json}")
    if args.png is not None:
        why_not = write_histogram(report, args.png)
        print(why_not or f"histogram written to {args.png}", file=sys.stderr if why_not else None)
    if report.interrupted:
        return 130
    return 0 if report.ok_fraction == 1.0 else 1


async def _run_until_interrupted(config: LoadTestConfig, quiet: bool) -> LoadTestReport | None:
    """Ctrl-C stops the conversations and still returns the report of what was measured."""
    stop: trio.CancelScope | None = None
    report: LoadTestReport | None = None

    def stop_ready(scope: trio.CancelScope) -> None:
        nonlocal stop
        stop = scope

    async with trio.open_nursery() as nursery:

        async def on_interrupt() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    if stop is None:  # still checking health: give up at once
                        nursery.cancel_scope.cancel()
                    else:
                        stop.cancel()
                    return

        nursery.start_soon(on_interrupt)
        report = await run_load_test(
            config,
            progress_stream=None if quiet else sys.stderr,
            cancel_scope_ready=stop_ready,
        )
        nursery.cancel_scope.cancel()
    return report
