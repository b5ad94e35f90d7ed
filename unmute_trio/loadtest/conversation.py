"""One simulated user holding one conversation: greeting, then ``turns`` times speak and hear
the reply, like the original's load test (docs/benchmarks.md) but reacting to real playback.

```
conversation                     (VoiceClient nursery: the receive loop)
├── microphone  AudioPump: a 40 ms Ogg/Opus page every 40 ms, silence or speech
└── main        session.update; for each turn: queue speech once the bot's reply has been
                played, wait for the next response.audio.done, measure the turn
```

The microphone never stops, as in the browser: silence between utterances keeps the STT's
clock running. Each utterance starts on a 1920-sample frame boundary of the stream and lasts
whole frames, so the simulated STT's pause-detection delay is exact (see ``floor``).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from unmute_trio.loadtest.floor import SimulatorLatencies
from unmute_trio.loadtest.microphone import PAGE_S, PAGE_SAMPLES, EncodedMicrophone, OggStream
from unmute_trio.loadtest.report import ConversationResult, TurnTiming
from unmute_trio.loadtest.timing import TurnProblem, measure_turn, playback_end
from unmute_trio.protocol.moshi import SAMPLES_PER_FRAME
from unmute_trio.testing.voice_client import VoiceClient

_PAGES_PER_FRAME = SAMPLES_PER_FRAME // PAGE_SAMPLES  # utterances start on STT frame boundaries
# json.dumps({"type": "input_audio_buffer.append", "audio": audio}) around the base64 text,
# which needs no escaping: the same text without building and serialising a dict per page.
_APPEND_HEAD = '{"type": "input_audio_buffer.append", "audio": "'
_APPEND_TAIL = '"}'


@dataclasses.dataclass(frozen=True)
class ConversationPlan:
    url: str
    turns: int  # user utterances, each answered by the bot (after the greeting)
    microphone: EncodedMicrophone  # what the user says, in turn, pre-encoded
    instructions: dict[str, Any]
    voice: str | None = None
    think_s: float = 0.0  # pause between the end of the bot's playback and the user's speech
    turn_timeout_s: float = 30.0
    # Set when the services are the simulators: their latencies, and the designed
    # pause-detection delay of each utterance (computed up front: the replay takes CPU time).
    simulators: SimulatorLatencies | None = None
    pause_floors: tuple[float, ...] | None = None


class ConversationFailed(Exception):
    """The conversation could not go on; the message says why."""


@dataclasses.dataclass
class Utterance:
    pages: tuple[bytes, ...]
    not_before: float
    start: float | None = None  # trio time of its first page (set by the pump)

    @property
    def end(self) -> float | None:
        return None if self.start is None else self.start + len(self.pages) * PAGE_S


class AudioPump:
    """The microphone: sends one page every 40 ms on the trio clock, never skipping one."""

    def __init__(self, client: VoiceClient, microphone: EncodedMicrophone) -> None:
        self._client = client
        self._stream = OggStream(microphone)
        # Bound: the conversation queues one utterance per turn and waits for the bot's reply
        # before queueing the next, so at most one waits here.
        self._queue: deque[Utterance] = deque(maxlen=1)
        self._speaking: Utterance | None = None
        self._offset = 0
        self.pages_sent = 0
        self.max_lag_s = 0.0

    def say(self, pages: tuple[bytes, ...], *, not_before: float) -> Utterance:
        if len(pages) % _PAGES_PER_FRAME:
            raise ValueError("utterances must be whole 1920-sample frames")
        utterance = Utterance(pages, not_before)
        self._queue.append(utterance)
        return utterance

    async def run(self) -> None:
        next_at = trio.current_time()
        try:
            while True:
                await trio.sleep_until(next_at)
                self.max_lag_s = max(self.max_lag_s, trio.current_time() - next_at)
                ogg = self._stream.next_page(self._next_source(next_at))
                audio = base64.b64encode(ogg).decode("ascii")
                await self._client.send_text(_APPEND_HEAD + audio + _APPEND_TAIL)
                self.pages_sent += 1
                next_at += PAGE_S
        except ConnectionClosed:
            return  # the receive loop records the close; the conversation reports it

    def _next_source(self, at: float) -> bytes | None:
        """The utterance page to send at ``at``, or None for silence."""
        if (
            self._speaking is None
            and self._queue
            and self._queue[0].not_before <= at
            and self.pages_sent % _PAGES_PER_FRAME == 0
        ):
            self._speaking = self._queue.popleft()
            self._speaking.start = at
            self._offset = 0
        if self._speaking is None:
            return None
        page = self._speaking.pages[self._offset]
        self._offset += 1
        if self._offset == len(self._speaking.pages):
            self._speaking = None
        return page


async def run_conversation(
    plan: ConversationPlan,
    result: ConversationResult,
    *,
    on_turn: Callable[[TurnTiming], None] | None = None,
) -> None:
    """Hold one conversation, filling ``result`` as it goes (so a cancelled run keeps the
    turns measured so far). Expected failures are recorded in ``result.error``."""
    origin = trio.current_time()
    result.started_at_unix = time.time()
    failure: str | None = None
    try:
        # Bot audio is only timed: count its samples rather than decode it.
        async with VoiceClient.connect(plan.url, decode_audio=False) as client:
            try:
                await _converse(client, plan, result, origin, on_turn)
            finally:
                result.close_code = client.close_code
                result.events_received = len(client.events)
    except* ConversationFailed as group:
        failure = str(_first_leaf(group))
    except* (OSError, HandshakeError) as group:
        failure = f"cannot connect: {_first_leaf(group)!r}"
    except* ConnectionClosed as group:
        failure = f"connection closed: {_first_leaf(group)}"
    finally:
        result.duration_s = trio.current_time() - origin
    result.error = failure
    result.ok = failure is None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (possibly nested, one per nursery) group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _converse(
    client: VoiceClient,
    plan: ConversationPlan,
    result: ConversationResult,
    origin: float,
    on_turn: Callable[[TurnTiming], None] | None,
) -> None:
    await client.update_session(plan.instructions, voice=plan.voice)
    pump = AudioPump(client, plan.microphone)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run)
        try:
            mark = 0
            played_until = trio.current_time()
            for index in range(plan.turns + 1):
                utterance = None
                if index > 0:
                    clip_number = (index - 1) % len(plan.microphone.utterances)
                    start = max(trio.current_time(), played_until) + plan.think_s
                    pages = plan.microphone.utterances[clip_number]
                    utterance = pump.say(pages, not_before=start)
                done = await _wait_reply_done(client, index, mark, plan.turn_timeout_s)
                timing = _measure(client, index, mark, done, origin, utterance)
                if index > 0 and plan.simulators is not None and plan.pause_floors is not None:
                    timing.pause_floor_s = plan.pause_floors[clip_number]
                    timing.reply_floor_s = plan.simulators.reply_floor(timing.reply_text)
                result.turns.append(timing)
                if on_turn is not None:
                    on_turn(timing)
                end = playback_end(timing)
                played_until = origin + end if end is not None else trio.current_time()
                mark = done + 1
        finally:
            result.max_send_lag_s = pump.max_lag_s
            result.pages_sent = pump.pages_sent
            result.server_errors = [
                f"{e['error'].get('type')}: {e['error'].get('message')}"
                for e in client.of_type("error")
                if isinstance(e.get("error"), dict)
            ]
        nursery.cancel_scope.cancel()


async def _wait_reply_done(client: VoiceClient, index: int, mark: int, timeout_s: float) -> int:
    """The index of the next ``response.audio.done`` from ``mark`` on."""
    try:
        with trio.fail_after(timeout_s):
            await client.wait_for("response.audio.done", after=mark)
    except trio.TooSlowError:
        raise ConversationFailed(f"turn {index}: no reply within {timeout_s:g} s") from None
    except RuntimeError:  # the socket closed first
        raise ConversationFailed(
            f"turn {index}: the server closed the connection "
            f"({client.close_code} {client.close_reason!r})"
        ) from None
    types = client.types()
    return types.index("response.audio.done", mark)


def _measure(
    client: VoiceClient,
    index: int,
    mark: int,
    done: int,
    origin: float,
    utterance: Utterance | None,
) -> TurnTiming:
    user_audio = None
    if utterance is not None:
        if utterance.start is None or utterance.end is None:
            raise ConversationFailed(f"turn {index}: the bot replied before the user spoke")
        user_audio = (utterance.start, utterance.end)
    span = slice(mark, done + 1)
    try:
        return measure_turn(
            index,
            client.events[span],
            client.received_at[span],
            client.samples_in_event[span],
            origin=origin,
            user_audio=user_audio,
        )
    except TurnProblem as e:
        raise ConversationFailed(str(e)) from None
