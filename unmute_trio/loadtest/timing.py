"""Turn timings from the events a client received. Pure: no I/O, no clock.

The client keeps every event with its arrival time and the number of bot samples it decoded
(:class:`~unmute_trio.testing.voice_client.VoiceClient`); :func:`measure_turn` reads one
turn's slice of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unmute_trio.loadtest.report import TurnTiming
from unmute_trio.protocol.moshi import SAMPLE_RATE

TRANSCRIPTION_DELTA = "conversation.item.input_audio_transcription.delta"
# Float slack when comparing an arrival with the playback clock.
_EPSILON_S = 1e-6


class TurnProblem(Exception):
    """The events of a turn contradict a normal conversation (the message says how)."""


def measure_turn(
    index: int,
    events: Sequence[dict[str, Any]],
    received_at: Sequence[float],
    samples_in_event: Sequence[int],
    *,
    origin: float,
    user_audio: tuple[float, float] | None = None,
) -> TurnTiming:
    """Timings of one turn from its events (everything received since the turn began, up to and
    including its ``response.audio.done``). Times become relative to ``origin``;
    ``user_audio`` is the (start, end) of the user's speech, None for the greeting.

    Raises :class:`TurnProblem` when the turn is not a plain reply: the bot was interrupted,
    the reply started before the user had finished, or a phase is missing or out of order.
    """
    timing = TurnTiming(index=index)
    if user_audio is not None:
        timing.user_audio_start, timing.user_audio_end = (t - origin for t in user_audio)
    user_words: list[str] = []
    reply_words: list[str] = []
    arrivals: list[tuple[float, int]] = []  # audio deltas of the reply: (arrival, samples)
    for event, arrived, samples in zip(events, received_at, samples_in_event, strict=True):
        at = arrived - origin
        kind = event.get("type")
        if kind == TRANSCRIPTION_DELTA and event.get("delta", "").strip():
            if timing.first_transcript is None:
                timing.first_transcript = at
            user_words.append(event["delta"].strip())
        elif kind == "input_audio_buffer.speech_stopped" and timing.speech_stopped is None:
            timing.speech_stopped = at
        elif kind == "response.created" and timing.response_created is None:
            timing.response_created = at
        elif kind == "unmute.response.text.delta.ready" and timing.response_created is not None:
            if timing.first_text_ready is None:
                timing.first_text_ready = at
            reply_words.append(event.get("delta", ""))
        elif kind == "response.audio.delta" and timing.response_created is not None:
            arrivals.append((at, samples))
        elif kind == "response.audio.done" and timing.response_created is not None:
            timing.audio_done = at
        elif kind in ("unmute.interrupted_by_vad", "unmute.interrupted_by_word"):
            raise TurnProblem(f"turn {index}: the bot was interrupted ({kind})")
    timing.user_text = " ".join(user_words)
    timing.reply_text = "".join(reply_words).strip()
    _playback(timing, arrivals)
    _check_order(timing)
    return timing


def _playback(timing: TurnTiming, arrivals: list[tuple[float, int]]) -> None:
    """Audio amount, gaps between deltas, and lateness against the playback clock."""
    if not arrivals:
        return
    timing.first_audio = arrivals[0][0]
    played_s = 0.0
    previous: float | None = None
    for arrived, samples in arrivals:
        if previous is not None:
            timing.audio_gaps_s.append(arrived - previous)
        previous = arrived
        if samples == 0:
            continue  # only Ogg headers: nothing to play
        timing.frames += 1
        lateness = arrived - (timing.first_audio + played_s)
        if lateness > _EPSILON_S:
            timing.late_frames += 1
            timing.max_lateness_s = max(timing.max_lateness_s, lateness)
        played_s += samples / SAMPLE_RATE
    timing.audio_s = played_s


def playback_end(timing: TurnTiming) -> float | None:
    """When a browser would finish playing this reply (relative time), if it had audio: it
    plays from the first frame on and waits for any frame that comes late."""
    if timing.first_audio is None:
        return None
    return timing.first_audio + timing.audio_s + timing.max_lateness_s


def _check_order(timing: TurnTiming) -> None:
    phases = (
        ("response.created", timing.response_created),
        ("the first text delta", timing.first_text_ready),
        ("the first audio delta", timing.first_audio),
        ("response.audio.done", timing.audio_done),
    )
    for name, value in phases:
        if value is None:
            raise TurnProblem(f"turn {timing.index}: no {name}")
    assert timing.response_created is not None and timing.first_audio is not None
    assert timing.audio_done is not None
    if not timing.response_created <= timing.first_audio <= timing.audio_done:
        raise TurnProblem(f"turn {timing.index}: audio outside response.created … audio.done")
    if timing.user_audio_end is not None:
        if timing.response_created < timing.user_audio_end:
            raise TurnProblem(f"turn {timing.index}: the reply began before the user finished")
        if timing.first_transcript is None:
            raise TurnProblem(f"turn {timing.index}: the user's speech was not transcribed")
