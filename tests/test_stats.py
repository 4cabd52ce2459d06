"""The statistics and the verdict rule, on constructed data whose answer is known."""

import math

import numpy as np
import pytest

from fwbench import stats
from fwbench.errors import ConfigError, DataError
from fwbench.stats import (
    A_BETTER,
    B_BETTER,
    CONTRADICTED,
    DIFFERENCE,
    EQUIVALENT,
    INCONCLUSIVE,
    RATIO,
    SUPPORTED,
    Comparison,
    compare,
    compare_interaction,
    equivalence_verdict,
    mean_ci,
    median_iqr,
    verdict,
)

# Small enough to keep the suite fast, large enough for stable percentiles.
N_BOOT = 1000
# Multiplicative spread of +-1 %: five "trials" around a centre.
JITTER = np.array([0.99, 0.995, 1.0, 1.005, 1.01])
MARGIN = 0.015


def trials(centre: float) -> np.ndarray:
    return centre * JITTER


def difference(low: float, high: float) -> Comparison:
    """A hand-made difference interval, to put its ends exactly where a case needs them."""
    return Comparison((low + high) / 2, low, high, 3, 3, "constructed", kind=DIFFERENCE)


def test_clear_win_is_supported_and_the_opposite_claim_contradicted():
    result = compare(trials(120.0), trials(100.0), higher_is_better=True, n_boot=N_BOOT)
    assert result.estimate == pytest.approx(1.2)
    assert 1.0 < result.ci_low <= result.estimate <= result.ci_high
    assert verdict(result, A_BETTER) == SUPPORTED
    assert verdict(result, B_BETTER) == CONTRADICTED


def test_clear_loss_on_a_lower_is_better_metric_is_contradicted():
    # a uses 30 % more memory: a claim that a is better (uses less) is contradicted.
    result = compare(trials(130.0), trials(100.0), higher_is_better=False, n_boot=N_BOOT)
    assert result.ci_low > 1.0
    assert verdict(result, A_BETTER) == CONTRADICTED
    assert verdict(result, B_BETTER) == SUPPORTED


def test_lower_is_better_win_is_supported():
    result = compare(trials(80.0), trials(100.0), higher_is_better=False, n_boot=N_BOOT)
    assert result.ci_high < 1.0
    assert verdict(result, A_BETTER) == SUPPORTED


def test_overlapping_samples_are_inconclusive():
    a = [98.0, 103.0, 100.0, 96.0, 104.0]
    b = [101.0, 97.0, 102.0, 99.0, 100.0]
    result = compare(a, b, higher_is_better=True, n_boot=N_BOOT)
    assert result.ci_low < 1.0 < result.ci_high
    assert verdict(result, A_BETTER) == INCONCLUSIVE
    assert verdict(result, B_BETTER) == INCONCLUSIVE


@pytest.mark.parametrize("a, b", [([500.0], trials(100.0)), (trials(500.0), [100.0]), ([500.0], [100.0])])
def test_single_sample_has_no_interval_and_is_inconclusive(a, b):
    result = compare(a, b, higher_is_better=True, n_boot=N_BOOT)
    assert result.estimate == pytest.approx(np.mean(a) / np.mean(b))
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert not result.has_interval
    assert "fewer than 2" in result.method
    assert verdict(result, A_BETTER) == INCONCLUSIVE


def test_empty_side_gives_nan_estimate_and_inconclusive():
    result = compare([], trials(1.0), higher_is_better=True, n_boot=N_BOOT)
    assert math.isnan(result.estimate)
    assert (result.n_a, result.n_b) == (0, 5)
    assert verdict(result, A_BETTER) == INCONCLUSIVE


def test_interval_ending_exactly_at_no_effect_does_not_exclude_it():
    touching = Comparison(1.1, 1.0, 1.2, 5, 5, "constructed")
    assert verdict(touching, A_BETTER) == INCONCLUSIVE


def test_difference_kind_uses_zero_as_no_effect():
    result = compare(trials(1.0) + 0.5, trials(1.0), higher_is_better=True, kind=DIFFERENCE, n_boot=N_BOOT)
    assert result.estimate == pytest.approx(0.5)
    assert result.ci_low > 0.0
    assert verdict(result, A_BETTER) == SUPPORTED


def test_median_statistic_ignores_one_outlier_trial():
    a = [100.0, 101.0, 99.0, 100.0, 10_000.0]
    result = compare(a, trials(100.0), higher_is_better=True, statistic=stats.MEDIAN, n_boot=N_BOOT)
    assert result.estimate == pytest.approx(1.0)


def test_nan_is_a_missing_measurement_not_a_sample():
    result = compare([120.0, np.nan, 121.0], [100.0, 101.0], higher_is_better=True, n_boot=N_BOOT)
    assert result.n_a == 2
    assert result.estimate == pytest.approx(120.5 / 100.5)


def test_same_seed_gives_the_same_interval_and_another_seed_a_different_one():
    a = [98.0, 103.0, 100.0, 96.0, 104.0]
    b = [101.0, 97.0, 102.0, 99.0, 100.0]
    first = compare(a, b, higher_is_better=True, n_boot=N_BOOT, seed=7)
    again = compare(a, b, higher_is_better=True, n_boot=N_BOOT, seed=7)
    other = compare(a, b, higher_is_better=True, n_boot=N_BOOT, seed=8)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_wider_confidence_gives_a_wider_interval():
    a, b = [98.0, 103.0, 100.0, 96.0, 104.0], [101.0, 97.0, 102.0, 99.0, 100.0]
    narrow = compare(a, b, higher_is_better=True, confidence=0.8, n_boot=N_BOOT)
    wide = compare(a, b, higher_is_better=True, confidence=0.99, n_boot=N_BOOT)
    assert wide.ci_low < narrow.ci_low and narrow.ci_high < wide.ci_high


@pytest.mark.parametrize("kwargs", [
    {"kind": "log"}, {"confidence": 1.0}, {"confidence": 0.0}, {"n_boot": 0}, {"statistic": "mode"},
])
def test_invalid_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        compare(trials(1.0), trials(1.0), higher_is_better=True, **kwargs)


@pytest.mark.parametrize("a", [[1.0, 0.0], [1.0, -2.0]])
def test_ratio_of_non_positive_values_raises_data_error(a):
    with pytest.raises(DataError, match="positive"):
        compare(a, trials(1.0), higher_is_better=True)


@pytest.mark.parametrize("a", [[1.0, np.inf], ["fast", "slow"]])
def test_infinite_or_non_numeric_samples_raise_data_error(a):
    with pytest.raises(DataError):
        compare(a, trials(1.0), higher_is_better=True, kind=DIFFERENCE)


def test_unknown_direction_raises_config_error():
    with pytest.raises(ConfigError, match="claimed_direction"):
        verdict(Comparison(1.0, 0.9, 1.1, 3, 3, "constructed"), "faster")


# Equivalence (claim 6): the interval of a difference against a margin.

@pytest.mark.parametrize("low, high, expected", [
    (-0.005, 0.004, SUPPORTED),       # inside the margin, contains 0
    (0.002, 0.010, SUPPORTED),        # significant but tiny: still equivalent
    (0.020, 0.040, CONTRADICTED),     # wholly above +margin
    (-0.050, -0.016, CONTRADICTED),   # wholly below -margin
    (0.005, 0.030, INCONCLUSIVE),     # excludes 0, straddles +margin: size undecided
    (-0.030, 0.030, INCONCLUSIVE),    # contains 0 but wider than the margin: too few seeds
    (-0.015, 0.010, INCONCLUSIVE),    # touching the margin is not inside it
])
def test_equivalence_cases(low, high, expected):
    assert equivalence_verdict(difference(low, high), MARGIN) == expected
    assert verdict(difference(low, high), EQUIVALENT, margin=MARGIN) == expected


def test_equivalence_on_data_matching_and_diverging_accuracies():
    torch_acc = [0.951, 0.953, 0.949, 0.952, 0.950]
    same = compare([0.950, 0.952, 0.951, 0.953, 0.949], torch_acc, True, kind=DIFFERENCE, n_boot=N_BOOT)
    apart = compare([0.900, 0.902, 0.901, 0.903, 0.899], torch_acc, True, kind=DIFFERENCE, n_boot=N_BOOT)
    assert verdict(same, EQUIVALENT, margin=MARGIN) == SUPPORTED
    assert verdict(apart, EQUIVALENT, margin=MARGIN) == CONTRADICTED


def test_equivalence_with_a_single_seed_is_inconclusive():
    single = compare([0.95], [0.95], True, kind=DIFFERENCE, n_boot=N_BOOT)
    assert verdict(single, EQUIVALENT, margin=MARGIN) == INCONCLUSIVE


def test_equivalence_margin_is_a_parameter():
    interval = difference(0.005, 0.020)
    assert equivalence_verdict(interval, 0.015) == INCONCLUSIVE
    assert equivalence_verdict(interval, 0.030) == SUPPORTED


@pytest.mark.parametrize("margin", [None, 0.0, -0.01, math.inf])
def test_equivalence_needs_a_positive_margin(margin):
    with pytest.raises(ConfigError, match="margin"):
        verdict(difference(-0.001, 0.001), EQUIVALENT, margin=margin)


def test_equivalence_of_a_ratio_is_refused():
    with pytest.raises(ConfigError, match="difference"):
        equivalence_verdict(Comparison(1.0, 0.99, 1.01, 3, 3, "constructed"), MARGIN)


# Interaction: does a's advantage grow from condition 2 to condition 1?

def test_interaction_detects_a_growing_advantage():
    # a/b is 1.5 in condition 1 and 1.0 in condition 2.
    result = compare_interaction(trials(150.0), trials(100.0), trials(10.0), trials(10.0),
                                 higher_is_better=True, n_boot=N_BOOT)
    assert result.estimate == pytest.approx(1.5)
    assert verdict(result, A_BETTER) == SUPPORTED


def test_interaction_with_a_constant_advantage_is_inconclusive():
    a_1 = [118.0, 123.0, 120.0, 116.0, 124.0]
    a_2 = [11.9, 12.2, 12.0, 11.7, 12.3]
    result = compare_interaction(a_1, trials(100.0), a_2, trials(10.0), higher_is_better=True, n_boot=N_BOOT)
    assert result.ci_low < 1.0 < result.ci_high
    assert verdict(result, A_BETTER) == INCONCLUSIVE


def test_interaction_with_a_single_sample_group_is_inconclusive():
    result = compare_interaction([150.0], trials(100.0), trials(10.0), trials(10.0),
                                 higher_is_better=True, n_boot=N_BOOT)
    assert math.isnan(result.ci_low)
    assert (result.n_a, result.n_b) == (1, 5)
    assert verdict(result, A_BETTER) == INCONCLUSIVE


# Summaries.

def test_mean_ci_matches_the_t_interval():
    summary = mean_ci([1.0, 2.0, 3.0], confidence=0.95)
    # sd 1, n 3, t(0.975, df=2) = 4.302653
    assert summary.mean == pytest.approx(2.0)
    assert summary.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert summary.low == pytest.approx(2.0 - summary.half_width)


def test_mean_ci_of_one_value_has_nan_half_width():
    summary = mean_ci([0.97])
    assert summary.mean == pytest.approx(0.97)
    assert math.isnan(summary.half_width)
    assert summary.n == 1
    assert math.isnan(mean_ci([]).mean)


def test_median_iqr():
    summary = median_iqr([5.0, 1.0, 3.0, 2.0, 4.0, np.nan])
    assert (summary.median, summary.q1, summary.q3, summary.n) == (3.0, 2.0, 4.0, 5)
    assert summary.iqr == 2.0
    assert math.isnan(median_iqr([]).median)
