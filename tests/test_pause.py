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


def test_ema_starts_at_zero_by_default() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.5)
    assert ema.value == 0.0
    assert ema.update(dt=0.1, new_value=1.0) == pytest.approx(0.5)  # from 0, one half-life


def test_ema_half_lives_must_be_positive_and_the_refusal_says_so() -> None:
    for attack, release in ((0.0, 0.5), (0.1, 0.0), (-0.1, 0.5), (0.1, -0.5)):
        with pytest.raises(ValueError) as refused:
            ExponentialMovingAverage(attack_time=attack, release_time=release)
        assert str(refused.value) == "attack_time and release_time must be positive"
    tiny = ExponentialMovingAverage(attack_time=1e-9, release_time=1e-9)  # just above 0: taken
    assert tiny.release_time == 1e-9


def test_ema_refusals_name_the_bad_value() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.5)
    with pytest.raises(ValueError) as bad_dt:
        ema.update(dt=0.0, new_value=0.5)
    assert str(bad_dt.value) == "dt must be positive, got 0.0"
    with pytest.raises(ValueError) as bad_value:
        ema.update(dt=0.1, new_value=-0.25)
    assert str(bad_value.value) == "new_value must be non-negative, got -0.25"
    with pytest.raises(ValueError) as nan:
        ema.update(dt=0.1, new_value=math.nan)
    assert str(nan.value) == "new_value must be non-negative, got nan"


def test_time_to_decay_to_refuses_zero_and_one_with_its_own_text() -> None:
    ema = ExponentialMovingAverage(attack_time=0.1, release_time=0.5)
    for fraction in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError) as refused:
            ema.time_to_decay_to(fraction)
        assert str(refused.value) == f"fraction must be in (0, 1), got {fraction!r}"


def test_check_prs_refusals_say_what_is_wrong() -> None:
    from unmute_trio.conversation.pause import check_prs

    with pytest.raises(ValueError) as short:
        check_prs([0.1, 0.2])
    assert str(short.value) == "prs has 2 values, the pause head is index 2"
    with pytest.raises(ValueError) as not_probability:
        check_prs([0.1, 0.2, 1.5, 0.3])
    assert str(not_probability.value) == "prs[2] is not a probability: 1.5"
    check_prs([0.0, 0.0, 0.0])  # three values are enough; 0 and 1 are probabilities
    check_prs([1.0, 1.0, 1.0, 1.0])
