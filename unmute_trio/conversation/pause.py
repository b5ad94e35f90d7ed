"""Pause prediction from the STT's semantic VAD (docs/services.md). Pure, no I/O; part of the
conversation core, which feeds it every ``Step`` of the session's STT stream.

The STT model sends one ``Step`` per 80 ms frame with ``prs``: ``prs[i]`` is the probability that
the user has paused for at least 0.5, 1, 2, 3 s (i = 0..3). Unmute uses the 2-second head,
ignores the first 12 steps (the heads are noisy while the model warms up) and smooths with an
exponential moving average whose half-life (10 ms) is far below the frame time, so the smoothed
value follows the raw one almost exactly (alpha ≈ 0.996). The turn-taking policy compares the
result with its thresholds (pause above 0.6, barge-in below 0.4); this module only computes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from unmute_trio.protocol.moshi import FRAME_TIME_S

PAUSE_HEAD_INDEX = 2  # the "paused for at least 2 s" head
WARMUP_STEPS = 12  # steps ignored at the start of a connection
SMOOTHING_HALF_LIFE_S = 0.01  # attack and release
# Before the first real prediction we say "not speaking" (1.0), as the original does.
INITIAL_PAUSE_PREDICTION = 1.0


class ExponentialMovingAverage:
    """An EMA with separate half-lives for rising (attack) and falling (release) values.

    ``update(dt=..., new_value=...)`` moves ``value`` towards ``new_value`` by
    ``alpha = 1 - 2 ** (-dt / half_life)``, where the half-life is ``attack_time`` when the new
    value is above the current one and ``release_time`` otherwise: after ``dt`` equal to the
    half-life, the distance to a constant input has halved.
    """

    def __init__(
        self, *, attack_time: float, release_time: float, initial_value: float = 0.0
    ) -> None:
        if not (attack_time > 0 and release_time > 0):
            raise ValueError("attack_time and release_time must be positive")
        self.attack_time = attack_time
        self.release_time = release_time
        self.value = initial_value

    def update(self, *, dt: float, new_value: float) -> float:
        """Fold in ``new_value``, observed ``dt`` s after the previous one; return the value."""
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt!r}")
        if not new_value >= 0:  # also rejects NaN
            raise ValueError(f"new_value must be non-negative, got {new_value!r}")
        half_life = self.attack_time if new_value > self.value else self.release_time
        alpha = 1.0 - 2.0 ** (-dt / half_life)
        self.value = (1.0 - alpha) * self.value + alpha * new_value
        return self.value

    def time_to_decay_to(self, fraction: float) -> float:
        """Seconds for a falling value to reach ``fraction`` (0 < fraction < 1) of its start."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
        return -self.release_time * math.log2(fraction)


def check_prs(prs: Sequence[float]) -> None:
    """Raise ``ValueError`` unless ``prs`` has the pause head and it is a probability (the STT
    client checks every Step with this, so the core only ever sees valid ones)."""
    if len(prs) <= PAUSE_HEAD_INDEX:
        raise ValueError(f"prs has {len(prs)} values, the pause head is index 2")
    probability = prs[PAUSE_HEAD_INDEX]
    if not 0.0 <= probability <= 1.0:  # also rejects NaN
        raise ValueError(f"prs[2] is not a probability: {probability!r}")


class PausePredictor:
    """The smoothed "the user has paused" probability of one STT connection.

    Feed it every ``Step.prs`` in order with :meth:`update`. The first :data:`WARMUP_STEPS`
    steps leave the value unchanged; after that ``prs[2]`` drives the EMA at one frame (0.08 s)
    per step. :meth:`reset` forces the value to 0 ("speaking"): the machine calls it on the first
    word of a user turn so that a pause head that has not caught up yet cannot end the turn right
    after its first word. The warm-up is per connection and is not repeated by :meth:`reset`.
    """

    def __init__(self) -> None:
        self._ema = ExponentialMovingAverage(
            attack_time=SMOOTHING_HALF_LIFE_S,
            release_time=SMOOTHING_HALF_LIFE_S,
            initial_value=INITIAL_PAUSE_PREDICTION,
        )
        self._steps_seen = 0

    @property
    def value(self) -> float:
        return self._ema.value

    @property
    def warming_up(self) -> bool:
        return self._steps_seen < WARMUP_STEPS

    def update(self, prs: Sequence[float]) -> float:
        """Fold in one step's head probabilities; return the current pause prediction.

        Raises ``ValueError`` if ``prs`` has no pause head or its value is not a probability.
        """
        check_prs(prs)
        probability = prs[PAUSE_HEAD_INDEX]
        if self.warming_up:
            self._steps_seen += 1
            return self.value
        return self._ema.update(dt=FRAME_TIME_S, new_value=probability)

    def reset(self) -> None:
        self._ema.value = 0.0
