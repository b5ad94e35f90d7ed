"""Run many simulated users against a server and collect a :class:`LoadTestReport`.

```
run_load_test
├── progress      one status line per interval (optional)
└── users         nursery: ``users`` tasks; user u starts after delay + u × ramp / users and
    └── user u    takes the next conversation number until ``conversations`` have started
```

Before anything, ``GET /v1/health`` must answer ``ok: true`` (as the original checks). A
cancelled run (Ctrl-C) still returns a report: finished conversations, the turns measured so
far of the others, and ``interrupted`` set.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import trio

from unmute_trio.loadtest.conversation import ConversationPlan, run_conversation
from unmute_trio.loadtest.floor import (
    SimulatorLatencies,
    frame_aligned_length,
    pause_detection_delay,
)
from unmute_trio.loadtest.microphone import encode_microphone
from unmute_trio.loadtest.report import ConversationResult, LoadTestReport, TurnTiming
from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.services import ws_masking
from unmute_trio.testing.speech import speech_like

SMALLTALK: dict[str, Any] = {"type": "smalltalk", "language": None}
AUTO_VOICE = "auto"
HTTP_TIMEOUT_S = 10.0
# Recent voice-to-voice latencies shown in the progress line (a rolling window, not the report).
PROGRESS_WINDOW = 200
DISTINCT_CLIPS = 4  # different utterances per run (each gets its own exact floor)


class LoadTestError(Exception):
    """The load test cannot start (the message says why)."""


@dataclasses.dataclass(frozen=True)
class LoadTestConfig:
    url: str  # the realtime WebSocket, e.g. ws://localhost:8000/v1/realtime
    users: int = 1
    conversations: int | None = None  # total; None: one per user
    turns: int = 2
    speech_s: float = 1.5
    think_s: float = 0.0
    ramp_s: float = 2.0
    delay_s: float = 0.0
    turn_timeout_s: float = 30.0
    voice: str | None = AUTO_VOICE  # AUTO_VOICE: the first voice of GET /v1/voices
    instructions: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(SMALLTALK))
    simulators: SimulatorLatencies | None = None
    seed: int = 0
    check_health: bool = True

    @property
    def total_conversations(self) -> int:
        return self.users if self.conversations is None else self.conversations


def http_base(realtime_url: str) -> str:
    """``ws://host:port/prefix/v1/realtime`` → ``http://host:port/prefix``."""
    parts = urlsplit(realtime_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise LoadTestError(f"the URL must be ws:// or wss://, got {realtime_url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1/realtime"):
        path = path[: -len("/v1/realtime")]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def check_health(base: str) -> None:
    """Raise :class:`LoadTestError` unless ``GET /v1/health`` says ``ok: true``."""
    url = f"{base}/v1/health"
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            response = await http.get(url)
    except httpx.HTTPError as e:
        raise LoadTestError(f"cannot reach {url}: {e!r}") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("ok") is not True:
        raise LoadTestError(
            f"{url} answered {response.status_code} {response.text[:200]!r}: the server or one "
            "of its services (STT, TTS, LLM) is not up"
        )


async def first_voice(base: str) -> str | None:
    """The voice the original's load test uses: the first listed voice's path on the server."""
    url = f"{base}/v1/voices"
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            response = await http.get(url)
        response.raise_for_status()
        voices = response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise LoadTestError(f"cannot list the voices at {url}: {e!r}") from None
    for voice in voices if isinstance(voices, list) else []:
        source = voice.get("source") if isinstance(voice, dict) else None
        if isinstance(source, dict) and isinstance(source.get("path_on_server"), str):
            return source["path_on_server"]
    return None


def make_clips(speech_s: float, seed: int) -> tuple[np.ndarray, ...]:
    n = frame_aligned_length(speech_s)
    return tuple(speech_like(n / SAMPLE_RATE, seed=seed + i) for i in range(DISTINCT_CLIPS))


@dataclasses.dataclass
class Progress:
    """Live counters for the status line."""

    total: int
    started: int = 0
    finished: int = 0
    failed: int = 0
    turns: int = 0
    recent_v2v: deque[float] = dataclasses.field(
        default_factory=lambda: deque(maxlen=PROGRESS_WINDOW)
    )

    def turn_done(self, timing: TurnTiming) -> None:
        self.turns += 1
        if timing.voice_to_voice is not None:
            self.recent_v2v.append(timing.voice_to_voice)

    def line(self, elapsed_s: float) -> str:
        v2v = (
            f", voice-to-voice median {statistics.median(self.recent_v2v) * 1000:.0f} ms"
            if self.recent_v2v
            else ""
        )
        active = self.started - self.finished
        return (
            f"[{elapsed_s:6.1f} s] conversations {self.finished}/{self.total} done "
            f"({self.failed} failed), {active} active, {self.turns} turns{v2v}"
        )


async def run_load_test(
    config: LoadTestConfig,
    *,
    progress_stream: TextIO | None = None,
    progress_interval_s: float = 1.0,
    cancel_scope_ready: Callable[[trio.CancelScope], None] | None = None,
) -> LoadTestReport:
    """Run the load test; ``cancel_scope_ready`` receives the scope that stops it early (the
    report then holds partial results)."""
    ws_masking.apply()  # every microphone frame of every user is masked
    base = http_base(config.url)
    if config.check_health:
        await check_health(base)
    voice = await first_voice(base) if config.voice == AUTO_VOICE else config.voice
    microphone = encode_microphone(make_clips(config.speech_s, config.seed))
    pause_floors = None
    if config.simulators is not None:
        pause_floors = tuple(
            pause_detection_delay(microphone, i, config.simulators)
            for i in range(len(microphone.utterances))
        )
    plan = ConversationPlan(
        url=config.url,
        turns=config.turns,
        microphone=microphone,
        instructions=config.instructions,
        voice=voice,
        think_s=config.think_s,
        turn_timeout_s=config.turn_timeout_s,
        simulators=config.simulators,
        pause_floors=pause_floors,
    )
    progress = Progress(total=config.total_conversations)
    results: list[ConversationResult] = []
    next_conversation = 0
    started_unix, started = time.time(), trio.current_time()

    async def user(number: int) -> None:
        nonlocal next_conversation
        await trio.sleep(config.delay_s + number * config.ramp_s / config.users)
        while next_conversation < config.total_conversations:
            result = ConversationResult(
                index=next_conversation, user=number, started_at_unix=0.0, duration_s=0.0, ok=False
            )
            next_conversation += 1
            results.append(result)  # before it runs: a cancelled run keeps its partial turns
            progress.started += 1
            await run_conversation(plan, result, on_turn=progress.turn_done)
            progress.finished += 1
            progress.failed += not result.ok

    with trio.CancelScope() as stop:
        if cancel_scope_ready is not None:
            cancel_scope_ready(stop)
        async with trio.open_nursery() as nursery:
            if progress_stream is not None:
                nursery.start_soon(_show_progress, progress, progress_stream, progress_interval_s)
            async with trio.open_nursery() as users:
                for number in range(config.users):
                    users.start_soon(user, number)
            nursery.cancel_scope.cancel()
    if progress_stream is not None:
        _end_progress(progress, progress_stream, trio.current_time() - started)
    for result in results:
        if not result.ok and result.error is None:
            result.error = "interrupted before it finished"
    settings = dataclasses.asdict(config)
    settings["voice"] = voice
    return LoadTestReport(
        url=config.url,
        started_at_unix=started_unix,
        wall_s=trio.current_time() - started,
        interrupted=stop.cancelled_caught,
        settings=settings,
        conversations=results,
    )


async def _show_progress(progress: Progress, stream: TextIO, interval_s: float) -> None:
    started = trio.current_time()
    interactive = stream.isatty()
    # Not a terminal (a log file): a line now and then instead of one rewritten line.
    every = 1 if interactive else max(1, math.ceil(10.0 / interval_s))
    tick = 0
    while True:
        await trio.sleep(interval_s)
        tick += 1
        if tick % every == 0:
            line = progress.line(trio.current_time() - started)
            stream.write(f"\r{line}\033[K" if interactive else f"{line}\n")
            stream.flush()


def _end_progress(progress: Progress, stream: TextIO, elapsed_s: float) -> None:
    line = progress.line(elapsed_s)
    stream.write(f"\r{line}\033[K\n" if stream.isatty() else f"{line}\n")
    stream.flush()


def default_progress_stream() -> TextIO:
    return sys.stderr
