"""The statistics and the verdict rule, on constructed data whose answer is known."""

import math

import numpy as np
import pytest

from fwbench.errors import ConfigError, DataError
from fwbench.stats import (
    A_BETTER,
    B_BETTER,
    CONTRADICTED,
    DIFFERENCE,
    EQUIVALENT,
    INCONCLUSIVE,
    NO_MEANINGFUL_DIFFERENCE,
    RATIO,
    SUPPORTED,
    NO_PRIOR,
    Comparison,
    compare,
    fit_variance_prior,
    contrast,
    equivalence_verdict,
    mean_ci,
    median_iqr,
    no_difference_zone,
    verdict,
)

# Multiplicative spread of +-1 %: five processes' means around a centre.
JITTER = np.array([0.99, 0.995, 1.0, 1.005, 1.01])
SPEED_MARGIN = 0.05
ACCURACY_MARGIN = 0.015


def processes(centre: float) -> np.ndarray:
    return centre * JITTER


def ratio(low: float, high: float, higher_is_better: bool = True) -> Comparison:
    """A hand-made ratio interval, to put its ends exactly where a case needs them."""
    return Comparison(math.sqrt(low * high), low, high, 3, 3, "constructed", higher_is_better=higher_is_better)


def difference(low: float, high: float) -> Comparison:
    return Comparison((low + high) / 2, low, high, 3, 3, "constructed", kind=DIFFERENCE)


# ------------------------------------------------------------------ the four verdicts and the margin


@pytest.mark.parametrize("low, high, claimed, expected", [
    (1.10, 1.30, A_BETTER, SUPPORTED),  # wholly beyond 1.05 on the claimed side
    (1.10, 1.30, B_BETTER, CONTRADICTED),  # the same interval, the other claim
    (0.70, 0.90, A_BETTER, CONTRADICTED),  # wholly below 1/1.05
    (0.97, 1.03, A_BETTER, NO_MEANINGFUL_DIFFERENCE),  # wholly inside [1/1.05, 1.05]
    (1.01, 1.04, A_BETTER, NO_MEANINGFUL_DIFFERENCE),  # excludes 1, but by less than the margin
    (1.02, 1.20, A_BETTER, INCONCLUSIVE),  # straddles the upper margin
    (0.80, 1.20, A_BETTER, INCONCLUSIVE),  # straddles both
])
def test_a_ratio_is_judged_against_the_margin_in_all_four_ways(low, high, claimed, expected):
    assert verdict(ratio(low, high), claimed, SPEED_MARGIN) == expected


def test_the_margin_zone_of_a_ratio_is_symmetric_on_the_log_scale():
    low, high = no_difference_zone(RATIO, SPEED_MARGIN)
    assert high == pytest.approx(1.05) and low == pytest.approx(1 / 1.05)
    assert no_difference_zone(DIFFERENCE, 0.02) == (-0.02, 0.02)


def test_an_interval_touching_the_margin_is_not_beyond_it():
    assert verdict(ratio(1.05, 1.3), A_BETTER, SPEED_MARGIN) == INCONCLUSIVE
    assert verdict(ratio(1 / 1.05, 1.05), A_BETTER, SPEED_MARGIN) == NO_MEANINGFUL_DIFFERENCE


def test_lower_is_better_turns_the_claimed_side_around():
    # a uses 20 % more memory: "a uses less" is contradicted, "b uses less" supported.
    more_memory = ratio(1.15, 1.25, higher_is_better=False)
    assert verdict(more_memory, A_BETTER, SPEED_MARGIN) == CONTRADICTED
    assert verdict(more_memory, B_BETTER, SPEED_MARGIN) == SUPPORTED


def test_a_difference_is_judged_against_its_margin_in_points():
    assert verdict(difference(0.02, 0.05), A_BETTER, ACCURACY_MARGIN) == SUPPORTED
    assert verdict(difference(-0.01, 0.01), A_BETTER, ACCURACY_MARGIN) == NO_MEANINGFUL_DIFFERENCE
    assert verdict(difference(-0.05, -0.02), A_BETTER, ACCURACY_MARGIN) == CONTRADICTED


def test_no_interval_is_inconclusive():
    result = compare([500.0], processes(100.0), higher_is_better=True)
    assert not result.has_interval
    assert verdict(result, A_BETTER, SPEED_MARGIN) == INCONCLUSIVE


@pytest.mark.parametrize("margin", [0, -0.05, math.nan, math.inf, True, "5%"])
def test_a_margin_must_be_a_positive_finite_number(margin):
    with pytest.raises(ConfigError, match="accepted is a positive finite number"):
        verdict(ratio(1.1, 1.2), A_BETTER, margin)


def test_unknown_direction_is_refused():
    with pytest.raises(ConfigError, match="claimed_direction"):
        verdict(ratio(1.1, 1.2), "sideways", SPEED_MARGIN)


# ------------------------------------------------------------------ equivalence (claim 6)


@pytest.mark.parametrize("low, high, expected", [
    (-0.01, 0.01, SUPPORTED),
    (0.001, 0.01, SUPPORTED),  # significant but tiny
    (0.02, 0.04, CONTRADICTED),
    (-0.04, -0.02, CONTRADICTED),
    (-0.01, 0.02, INCONCLUSIVE),
    (-0.03, 0.03, INCONCLUSIVE),
])
def test_equivalence_within_the_margin(low, high, expected):
    assert equivalence_verdict(difference(low, high), ACCURACY_MARGIN) == expected
    assert verdict(difference(low, high), EQUIVALENT, ACCURACY_MARGIN) == expected


# ------------------------------------------------------------------ the interval over processes


def test_ratio_is_of_geometric_means_with_an_interval_around_it():
    result = compare(processes(120.0), processes(100.0), higher_is_better=True)
    assert result.estimate == pytest.approx(1.2, rel=1e-4)
    assert result.ci_low < result.estimate < result.ci_high
    assert 1.15 < result.ci_low and result.ci_high < 1.25
    assert "Welch" in result.method and (result.n_a, result.n_b) == (5, 5)


def test_the_interval_is_welchs_t_on_the_log_values():
    a, b = np.array([110.0, 125.0, 118.0]), np.array([100.0, 96.0, 104.0, 99.0])
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / 3, lb.var(ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    from scipy import stats as scipy_stats

    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    result = compare(a, b, higher_is_better=True)
    assert result.estimate == pytest.approx(math.exp(la.mean() - lb.mean()))
    assert result.ci_low == pytest.approx(math.exp(la.mean() - lb.mean() - half))
    assert result.ci_high == pytest.approx(math.exp(la.mean() - lb.mean() + half))


def test_difference_kind_works_on_raw_values():
    result = compare(processes(1.0) + 0.5, processes(1.0), higher_is_better=True, kind=DIFFERENCE)
    assert result.estimate == pytest.approx(0.5)
    assert result.ci_low > 0.45


def test_a_contrast_of_four_groups_is_a_ratio_of_ratios():
    result = contrast([processes(200.0), processes(100.0), processes(120.0), processes(100.0)],
                      [1.0, -1.0, -1.0, 1.0], higher_is_better=True)
    assert result.estimate == pytest.approx(2.0 / 1.2, rel=1e-4)
    assert result.has_interval


def test_a_contrast_needs_one_coefficient_per_group():
    with pytest.raises(ConfigError, match="one coefficient per group"):
        contrast([processes(1.0), processes(1.0)], [1.0], higher_is_better=True)


def test_identical_processes_give_a_point_interval():
    result = compare([100.0, 100.0], [50.0, 50.0], higher_is_better=True)
    assert result.ci_low == pytest.approx(2.0) and result.ci_high == pytest.approx(2.0)


@pytest.mark.parametrize("a, b", [([500.0], processes(100.0)), (processes(500.0), [100.0])])
def test_a_single_process_has_no_interval(a, b):
    result = compare(a, b, higher_is_better=True)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert "fewer than 2" in result.method


def test_empty_side_gives_nan_estimate():
    result = compare([], processes(1.0), higher_is_better=True)
    assert math.isnan(result.estimate)
    assert (result.n_a, result.n_b) == (0, 5)


def test_nan_is_a_missing_measurement_not_a_sample():
    result = compare([120.0, np.nan, 121.0], [100.0, 101.0], higher_is_better=True)
    assert result.n_a == 2


def test_ratio_of_non_positive_values_is_refused():
    with pytest.raises(DataError, match="<= 0"):
        compare([0.0, 1.0], [1.0, 2.0], higher_is_better=True)


def test_infinite_values_are_refused():
    with pytest.raises(DataError, match="infinite"):
        compare([1.0, math.inf], [1.0, 2.0], higher_is_better=True)


def simulated_processes(rng, count: int, windows: int, log_mean: float, between: float, within: float):
    """windows per process around a process effect: the nested structure of a bench variant."""
    effects = rng.normal(0.0, between, size=count)
    return [np.exp(log_mean + effect + rng.normal(0.0, within, size=windows)) for effect in effects]


def test_the_process_interval_covers_a_known_between_process_variance():
    """With 3 processes of 5 windows a side and a between-process spread larger than the within-process one,
    the nominal 95 % interval covers the true ratio in at least 90 % of 400 simulations; an interval that
    treats every window as a trial does not."""
    rng = np.random.default_rng(20261202)
    true_ratio, simulations = 1.2, 400
    covered_by_process = covered_by_window = 0
    for _ in range(simulations):
        a = simulated_processes(rng, 3, 5, math.log(1200.0), between=0.1, within=0.03)
        b = simulated_processes(rng, 3, 5, math.log(1000.0), between=0.1, within=0.03)
        by_process = compare([w.mean() for w in a], [w.mean() for w in b], higher_is_better=True)
        by_window = compare(np.concatenate(a), np.concatenate(b), higher_is_better=True)
        covered_by_process += by_process.ci_low <= true_ratio <= by_process.ci_high
        covered_by_window += by_window.ci_low <= true_ratio <= by_window.ci_high
    assert covered_by_process / simulations >= 0.90
    assert covered_by_window / simulations < 0.80


def bench_like_grid(rng, groups: int, between_sds, windows: int = 5, processes: int = 3):
    """Process means of `groups` variants, each with its own between-process spread (log scale)."""
    return [np.array([w.mean() for w in simulated_processes(rng, processes, windows, math.log(1000.0), sd, 0.03)])
            for sd in between_sds[:groups]]


@pytest.mark.parametrize("spread", ["equal", "unequal"])
def test_moderated_intervals_cover_the_truth_and_vary_less_in_width(spread):
    """A 20-variant grid, 3 processes a side: the prior fitted to all variants' variances keeps the
    nominal 95 % interval's coverage at 90 % or more over 300 simulations, with between-process
    spreads equal across variants or spread over a factor of 4, and the interval's width varies less
    from one simulated run to the next than plain Welch's (which is why two runs agree more)."""
    rng = np.random.default_rng(20261203)
    true_ratio, simulations, variants = 1.2, 300, 20
    covered, widths, plain_widths = 0, [], []
    for _ in range(simulations):
        sds = np.full(variants, 0.1) if spread == "equal" else np.exp(rng.uniform(np.log(0.05), np.log(0.2), variants))
        grid = bench_like_grid(rng, variants, sds)
        grid[0] = grid[0] * true_ratio  # variant 0 is a: true ratio 1.2 over variant 1
        prior = fit_variance_prior(grid)
        moderated = compare(grid[0], grid[1], higher_is_better=True, prior=prior)
        plain = compare(grid[0], grid[1], higher_is_better=True)
        covered += moderated.ci_low <= true_ratio <= moderated.ci_high
        widths.append(math.log(moderated.ci_high / moderated.ci_low))
        plain_widths.append(math.log(plain.ci_high / plain.ci_low))
    assert covered / simulations >= 0.90
    assert np.std(widths) / np.mean(widths) < np.std(plain_widths) / np.mean(plain_widths)


def test_the_prior_recovers_a_known_spread_of_variances():
    """Variances drawn from a scaled inverse chi-square (s0² = 0.01, d0 = 8): the fit finds both."""
    rng = np.random.default_rng(7)
    groups = []
    for _ in range(2000):
        variance = 8 * 0.01 / rng.chisquare(8)
        groups.append(np.exp(rng.normal(0.0, math.sqrt(variance), size=3)))
    prior = fit_variance_prior(groups)
    assert prior.variance == pytest.approx(0.01, rel=0.15)
    assert prior.df == pytest.approx(8.0, rel=0.35)


def test_no_prior_from_too_few_groups_and_no_pooling_without_a_prior():
    assert fit_variance_prior([[1.0, 2.0], [2.0, 3.0]]) == NO_PRIOR
    a, b = [10.0, 11.0, 12.0], [9.0, 9.5, 10.5]
    assert compare(a, b, True, prior=NO_PRIOR) == compare(a, b, True)


def test_groups_alike_share_one_variance():
    """Variances no more spread than sampling makes: the prior says the groups share one (df inf)."""
    rng = np.random.default_rng(3)
    groups = [np.exp(rng.normal(0.0, 0.1, size=50)) for _ in range(10)]
    prior = fit_variance_prior(groups)
    assert prior.df > 100
    assert prior.variance == pytest.approx(0.01, rel=0.2)


# ------------------------------------------------------------------ summaries


def test_mean_ci_is_students_t():
    result = mean_ci([1.0, 2.0, 3.0])
    assert result.mean == pytest.approx(2.0)
    assert result.half_width == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([1.0]).half_width)


def test_median_iqr_of_a_known_sample():
    result = median_iqr([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (result.median, result.q1, result.q3, result.iqr) == (3.0, 2.0, 4.0, 2.0)
