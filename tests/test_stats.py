"""Tests of autoloss.utils.stats (paired differences, plateaus) against hand computations."""

from __future__ import annotations

import math

import pytest

from autoloss.utils.stats import paired_difference, plateau


def test_paired_difference_against_a_hand_computation():
    # differences 1, 2, 6: mean 3, sample std sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 2) = sqrt(7);
    # t_{0.975, 2} = 4.302652729911275 (tables), half width = t * sqrt(7) / sqrt(3)
    ref = {0: 10.0, 1: 20.0, 2: 30.0}
    value = {0: 11.0, 1: 22.0, 2: 36.0}
    d = paired_difference(value, ref)
    half = 4.302652729911275 * math.sqrt(7) / math.sqrt(3)
    assert d.mean == pytest.approx(3.0)
    assert d.low == pytest.approx(3.0 - half, rel=1e-9)
    assert d.high == pytest.approx(3.0 + half, rel=1e-9)
    assert (d.wins, d.n) == (3, 3)
    assert not d.significant  # 3 - 6.57 < 0
    assert d.to_dict()["significant"] is False


def test_paired_difference_is_paired_by_seed_not_by_position():
    # unpaired, the means differ by 0 (same values); paired by seed, by +1 every time
    ref = {0: 1.0, 1: 2.0, 2: 3.0}
    value = {1: 3.0, 2: 4.0, 0: 2.0}
    d = paired_difference(value, ref)
    assert d.mean == pytest.approx(1.0) and d.low == pytest.approx(1.0)  # no spread
    assert d.significant and d.wins == 3


def test_paired_difference_90_percent_and_missing_seeds():
    ref = {0: 0.0, 1: 0.0, 2: 0.0, 3: 5.0}
    value = {0: -1.0, 1: -2.0, 2: float("nan"), 4: 9.0}  # seeds 2 (NaN), 3 and 4 unpaired
    d = paired_difference(value, ref, confidence=0.9)
    # differences -1, -2: mean -1.5, std sqrt(0.5), t_{0.95, 1} = 6.313751514675043
    half = 6.313751514675043 * math.sqrt(0.5) / math.sqrt(2)
    assert (d.n, d.wins) == (2, 0)
    assert d.high == pytest.approx(-1.5 + half)
    one = paired_difference({0: 1.0}, {0: 0.0})
    assert (one.mean, one.low, one.high, one.significant) == (1.0, None, None, False)
    assert paired_difference({}, {0: 1.0}).mean is None
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(value, ref, confidence=95)


def test_plateau_last_quarter():
    steps = list(range(50, 650, 50))  # 12 evaluations: the last quarter is the last 3
    values = [0.1, 0.3, 0.4, 0.45, 0.5, 0.52, 0.53, 0.535, 0.54, 0.541, 0.544, 0.543]
    p = plateau(steps, values)
    assert (p.window, p.first_step, p.last_step) == (3, 500, 600)
    assert p.spread == pytest.approx(0.544 - 0.541) and p.reached
    assert p.drift == pytest.approx((0.541 + 0.544 + 0.543 - 0.53 - 0.535 - 0.54) / 3)
    rising = plateau(steps, values[:-3] + [0.55, 0.56, 0.57])
    assert rising.spread == pytest.approx(0.02) and not rising.reached
    assert plateau([1, 2], [0.1, 0.1]).window == 2  # at least two evaluations
    assert plateau([1, 2], [0.1, 0.1]).drift is None  # no window before the last
    assert not plateau([1, 2, 3], [0.1, float("nan"), 0.1]).reached
    with pytest.raises(ValueError, match="at least 2"):
        plateau([1], [0.1])
    with pytest.raises(ValueError, match="one length"):
        plateau([1, 2], [0.1])
