"""The EMA of contract 1.15 (with its test vectors) and the STT pause predictor of contract 0.4."""

from __future__ import annotations

import math

import pytest

from unmute_trio.conversation.pause import (
    INITIAL_PAUSE_PREDICTION,
    WARMUP_STEPS,
    ExponentialMovingAverage,
    PausePredictor,
)


def test_ema_contract_vectors() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.5, initial_value=0.0)
    assert ema.update(dt=1.0, new_value=0.0) == 0.0
    assert ema.update(dt=0.1, new_value=1.0) == pytest.approx(0.5)  # one attack half-life
    ema.update(dt=0.25, new_value=0.0)
    assert ema.update(dt=0.25, new_value=0.0) == pytest.approx(0.25)  # one release half-life
    assert ema.update(dt=0.1, new_value=0.75) == pytest.approx(0.5)
    assert ema.update(dt=1e9, new_value=1.0) == pytest.approx(1.0)
    assert ema.value == pytest.approx(1.0)


def test_ema_uses_attack_when_rising_and_release_when_falling() -> None:
    rising = ExponentialMovingAverage(attack_time=1.0, release_time=100.0, initial_value=0.0)
    assert rising.update(dt=1.0, new_value=1.0) == pytest.approx(0.5)
    falling = ExponentialMovingAverage(attack_time=100.0, release_time=1.0, initial_value=1.0)
    assert falling.update(dt=1.0, new_value=0.0) == pytest.approx(0.5)


def test_ema_rejects_what_the_original_asserts() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.1)
    with pytest.raises(ValueError):
        ema.update(dt=0.0, new_value=0.5)
    with pytest.raises(ValueError):
        ema.update(dt=0.1, new_value=-0.1)
    with pytest.raises(ValueError):
        ema.update(dt=0.1, new_value=math.nan)
    with pytest.raises(ValueError):
        ExponentialMovingAverage(attack_time=0.0, release_time=0.1)


def test_time_to_decay_to() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.5)
    assert ema.time_to_decay_to(0.5) == pytest.approx(0.5)
    assert ema.time_to_decay_to(0.25) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ema.time_to_decay_to(1.0)


def _prs(pause: float) -> list[float]:
    return [0.9, 0.8, pause, 0.1]


def test_pause_predictor_ignores_the_warmup_steps() -> None:
    predictor = PausePredictor()
    assert predictor.value == INITIAL_PAUSE_PREDICTION == 1.0
    for _ in range(WARMUP_STEPS):
        assert predictor.warming_up
        assert predictor.update(_prs(0.0)) == 1.0
    assert WARMUP_STEPS == 12
    assert not predictor.warming_up
    # The 13th step is the first one that counts.
    value = predictor.update(_prs(0.2))
    assert value == pytest.approx(1.0 - (1.0 - 2 ** (-8)) * 0.8)  # alpha = 1 - 2^(-0.08/0.01)


def test_pause_predictor_reads_head_two_almost_unsmoothed() -> None:
    predictor = PausePredictor()
    for _ in range(WARMUP_STEPS):
        predictor.update(_prs(0.5))
    predictor.update(_prs(0.0))
    assert predictor.value < 0.01
    predictor.update([0.0, 0.0, 0.9])  # only prs[2] matters
    assert predictor.value == pytest.approx(0.9, abs=0.01)


def test_pause_predictor_reset_means_speaking_and_keeps_warmup_done() -> None:
    predictor = PausePredictor()
    for _ in range(WARMUP_STEPS):
        predictor.update(_prs(1.0))
    predictor.reset()
    assert predictor.value == 0.0
    assert not predictor.warming_up
    assert predictor.update(_prs(1.0)) > 0.99


def test_pause_predictor_rejects_steps_without_a_pause_head() -> None:
    predictor = PausePredictor()
    with pytest.raises(ValueError):
        predictor.update([0.1, 0.2])
    with pytest.raises(ValueError):
        predictor.update([0.1, 0.2, 1.5])
