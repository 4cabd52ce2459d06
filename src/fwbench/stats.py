"""Statistics of the comparison report: intervals over trials or seeds, and the verdict rule.

Two groups of samples `a` and `b` (e.g. the trials of TensorFlow in graph mode
and of PyTorch in eager mode) are compared by an effect size with a percentile
bootstrap interval:

- kind="ratio": centre(a) / centre(b); no effect is 1. For positive metrics
  whose size varies by orders of magnitude across models (throughput, memory,
  time), a ratio reads the same for every model.
- kind="difference": centre(a) - centre(b); no effect is 0. For bounded
  metrics (accuracy, prediction parity) where "1.5 points" is the natural unit.

The bootstrap resamples each group independently (the groups are separate
runs: trial 3 of one framework has nothing to do with trial 3 of the other),
with a fixed RNG seed so that a report rebuilt from the same files shows the
same interval. With fewer than MIN_SAMPLES samples on either side there is no
spread to resample: the interval is NaN and every verdict is "inconclusive".

Honest limits, stated in the report rather than hidden:
- the percentile bootstrap is mildly too narrow for very small samples (3-5
  trials); the report shows n next to every interval;
- each condition is tested at the given confidence on its own, with no
  correction for the many conditions of a claim, so about 1 in 20 true
  no-effect conditions will still come out significant at 95 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from fwbench.errors import ConfigError, DataError

RATIO = "ratio"
DIFFERENCE = "difference"
KINDS = (RATIO, DIFFERENCE)
NO_EFFECT = {RATIO: 1.0, DIFFERENCE: 0.0}

MEAN = "mean"
MEDIAN = "median"
CENTRES = {MEAN: np.mean, MEDIAN: np.median}

# Claimed directions: the claim names the side it says is better (the metric
# knows whether better means higher or lower), or says the two are equivalent.
A_BETTER = "a_better"
B_BETTER = "b_better"
EQUIVALENT = "equivalent"
DIRECTIONS = (A_BETTER, B_BETTER, EQUIVALENT)

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)

# An interval needs spread, and spread needs two samples.
MIN_SAMPLES = 2
DEFAULT_CONFIDENCE = 0.95
DEFAULT_N_BOOT = 10_000
DEFAULT_SEED = 0
QUARTILES = (25.0, 75.0)


@dataclass(frozen=True)
class Comparison:
    """An effect size of a versus b with its bootstrap interval (NaN when undefined)."""

    estimate: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    method: str
    kind: str = RATIO
    higher_is_better: bool = True
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def no_effect(self) -> float:
        return NO_EFFECT[self.kind]

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)


@dataclass(frozen=True)
class MeanCI:
    """Mean with the half-width of its t interval (NaN with fewer than two values)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


@dataclass(frozen=True)
class MedianIQR:
    """Median and quartiles: a spread summary that one slow trial cannot drag."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ConfigError(f"confidence {confidence!r} is invalid: accepted is a number strictly between 0 and 1")
    return float(confidence)


def _check_choice(name: str, value: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ConfigError(f"{name} {value!r} is invalid: accepted are {', '.join(accepted)}")
    return value


def _sample(values, name: str) -> np.ndarray:
    """One-dimensional float array without NaN (a missing measurement is not a zero)."""
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise DataError(f"sample {name} is not numeric: accepted are numbers (NaN marks a missing one)") from None
    if np.isinf(array).any():
        raise DataError(f"sample {name} holds an infinite value: accepted are finite numbers or NaN")
    return array[~np.isnan(array)]


def _effect(centre_a, centre_b, kind: str):
    return centre_a / centre_b if kind == RATIO else centre_a - centre_b


def _bootstrap_centres(sample: np.ndarray, n_boot: int, rng: np.random.Generator, centre) -> np.ndarray:
    """The centre of n_boot resamples (with replacement, same size) of one group."""
    indices = rng.integers(0, sample.size, size=(n_boot, sample.size))
    return centre(sample[indices], axis=1)


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


def _check_bootstrap_args(kind: str, statistic: str, confidence: float, n_boot: int) -> None:
    _check_choice("kind", kind, KINDS)
    _check_choice("statistic", statistic, tuple(CENTRES))
    _check_confidence(confidence)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot {n_boot!r} is invalid: accepted is a positive integer")


def _check_positive(sample: np.ndarray, name: str) -> None:
    if (sample <= 0).any():
        raise DataError(f"sample {name} holds a value <= 0: a ratio needs positive values (use kind='difference')")


def compare(
    a,
    b,
    higher_is_better: bool,
    kind: str = RATIO,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    statistic: str = MEAN,
) -> Comparison:
    """Effect of a versus b (centre(a)/centre(b) or centre(a)-centre(b)) with a percentile bootstrap interval.

    statistic picks the centre: the mean by default (smoother than the median
    with the 3-10 trials or seeds a benchmark has), or the median.
    """
    _check_bootstrap_args(kind, statistic, confidence, n_boot)
    sample_a, sample_b = _sample(a, "a"), _sample(b, "b")
    if kind == RATIO:
        _check_positive(sample_a, "a")
        _check_positive(sample_b, "b")
    centre = CENTRES[statistic]
    n_a, n_b = sample_a.size, sample_b.size
    estimate = float(_effect(centre(sample_a), centre(sample_b), kind)) if n_a and n_b else math.nan
    common = {"kind": kind, "higher_is_better": higher_is_better, "confidence": confidence}
    if min(n_a, n_b) < MIN_SAMPLES:
        method = f"no interval: fewer than {MIN_SAMPLES} samples (n_a={n_a}, n_b={n_b})"
        return Comparison(estimate, math.nan, math.nan, n_a, n_b, method, **common)
    rng = np.random.default_rng(seed)
    draws = _effect(
        _bootstrap_centres(sample_a, n_boot, rng, centre),
        _bootstrap_centres(sample_b, n_boot, rng, centre),
        kind,
    )
    low, high = _percentile_interval(draws, confidence)
    method = f"percentile bootstrap of the {kind} of {statistic}s ({n_boot} resamples, seed {seed})"
    return Comparison(estimate, low, high, n_a, n_b, method, **common)


def compare_interaction(
    a_1,
    b_1,
    a_2,
    b_2,
    higher_is_better: bool,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    statistic: str = MEAN,
) -> Comparison:
    """How the a/b ratio in condition 1 compares with the a/b ratio in condition 2.

    estimate = (centre(a_1)/centre(b_1)) / (centre(a_2)/centre(b_2)), bootstrapped
    over all four groups independently. Answers "does a's advantage grow from
    condition 2 to condition 1" (e.g. large vs small model, GPU vs CPU): with
    verdict(..., A_BETTER) "supported" means a's advantage is larger in
    condition 1, in the metric's own sense of better. n_a and n_b are the
    smaller of a's (b's) two groups: the count that limits the interval.
    """
    _check_bootstrap_args(RATIO, statistic, confidence, n_boot)
    samples = [_sample(values, name) for values, name in ((a_1, "a_1"), (b_1, "b_1"), (a_2, "a_2"), (b_2, "b_2"))]
    for sample, name in zip(samples, ("a_1", "b_1", "a_2", "b_2")):
        _check_positive(sample, name)
    centre = CENTRES[statistic]
    sizes = [sample.size for sample in samples]
    common = {"kind": RATIO, "higher_is_better": higher_is_better, "confidence": confidence}
    estimate = math.nan
    if min(sizes) > 0:
        c = [centre(sample) for sample in samples]
        estimate = float((c[0] / c[1]) / (c[2] / c[3]))
    n_a, n_b = min(sizes[0], sizes[2]), min(sizes[1], sizes[3])
    if min(sizes) < MIN_SAMPLES:
        method = f"no interval: fewer than {MIN_SAMPLES} samples in a group (n={sizes})"
        return Comparison(estimate, math.nan, math.nan, n_a, n_b, method, **common)
    rng = np.random.default_rng(seed)
    d = [_bootstrap_centres(sample, n_boot, rng, centre) for sample in samples]
    low, high = _percentile_interval((d[0] / d[1]) / (d[2] / d[3]), confidence)
    method = f"percentile bootstrap of the ratio of {statistic} ratios ({n_boot} resamples, seed {seed}, n={sizes})"
    return Comparison(estimate, low, high, n_a, n_b, method, **common)


def verdict(comparison: Comparison, claimed_direction: str, margin: float | None = None) -> str:
    """supported / contradicted / inconclusive for a claim about a versus b.

    A_BETTER / B_BETTER: "supported" when the interval excludes no effect (1 for
    a ratio, 0 for a difference) on the side the claim predicts, "contradicted"
    when it excludes it on the other side, "inconclusive" when it contains it
    or is undefined. An interval that ends exactly at no effect does not
    exclude it. EQUIVALENT: see equivalence_verdict (needs margin).
    """
    _check_choice("claimed_direction", claimed_direction, DIRECTIONS)
    if claimed_direction == EQUIVALENT:
        return equivalence_verdict(comparison, margin)
    if not comparison.has_interval:
        return INCONCLUSIVE
    if comparison.ci_low > comparison.no_effect:
        observed_a_greater = True
    elif comparison.ci_high < comparison.no_effect:
        observed_a_greater = False
    else:
        return INCONCLUSIVE
    claimed_a_greater = comparison.higher_is_better == (claimed_direction == A_BETTER)
    return SUPPORTED if observed_a_greater == claimed_a_greater else CONTRADICTED


def equivalence_verdict(comparison: Comparison, margin: float | None) -> str:
    """Equivalence of a and b within +-margin (in the difference's units), TOST-like.

    - "supported": the whole interval lies strictly inside (-margin, +margin).
      With a 95 % interval this is two one-sided tests at 2.5 % each (the
      textbook TOST uses a 90 % interval, so this is the stricter reading). A
      difference that is significant but tiny (interval excludes 0, still
      inside the margin) is equivalent: "no practically relevant difference".
    - "contradicted": the whole interval lies beyond one margin (above +margin
      or below -margin): a difference larger than the margin is shown.
    - "inconclusive": anything else, including an interval that excludes 0 but
      straddles a margin (some difference, size undecided), an interval that
      contains 0 but is wider than the margin (too few seeds to tell), and a
      single seed (no interval).
    """
    if comparison.kind != DIFFERENCE:
        raise ConfigError(
            f"equivalence needs kind {DIFFERENCE!r}, got {comparison.kind!r}: the margin is in the metric's units"
        )
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ConfigError(f"equivalence margin {margin!r} is invalid: accepted is a positive finite number")
    if not comparison.has_interval:
        return INCONCLUSIVE
    if -margin < comparison.ci_low and comparison.ci_high < margin:
        return SUPPORTED
    if comparison.ci_low > margin or comparison.ci_high < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def mean_ci(values, confidence: float = DEFAULT_CONFIDENCE) -> MeanCI:
    """Mean and Student-t half-width; NaN half-width with fewer than two values."""
    confidence = _check_confidence(confidence)
    sample = _sample(values, "values")
    if sample.size == 0:
        return MeanCI(math.nan, math.nan, 0)
    mean = float(sample.mean())
    if sample.size < MIN_SAMPLES:
        return MeanCI(mean, math.nan, sample.size)
    t_quantile = scipy_stats.t.ppf((1.0 + confidence) / 2.0, df=sample.size - 1)
    half_width = float(t_quantile * sample.std(ddof=1) / math.sqrt(sample.size))
    return MeanCI(mean, half_width, sample.size)


def median_iqr(values) -> MedianIQR:
    """Median with first and third quartile (linear interpolation); NaN when empty."""
    sample = _sample(values, "values")
    if sample.size == 0:
        return MedianIQR(math.nan, math.nan, math.nan, 0)
    q1, q3 = np.percentile(sample, QUARTILES)
    return MedianIQR(float(np.median(sample)), float(q1), float(q3), sample.size)
