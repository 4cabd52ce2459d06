"""Statistics of the comparison report: intervals over independent processes, and the verdict rule.

The unit of replication is the process: a bench variant's windows inside one
process share that process's luck (its memory layout, thread placement, the
machine's state while it ran), so they are not independent trials of a
framework. Every interval here is therefore built from one value per
independent unit: the mean of a bench process's windows, or one training
seed's result (each seed is a process of its own).

An effect is a linear contrast of group means, sum_g c_g * mean_g: a ratio
a/b is the contrast (+1, -1) of the groups' log values (kind="ratio"; the
estimate is the ratio of geometric means), a difference the same contrast of
the raw values (kind="difference", for bounded metrics such as accuracy). A
difference of two ratios (claim 4: GPU over CPU) and the slope of a ratio
against model size (claim 1b) are contrasts too. The interval is Welch's t
interval with Satterthwaite's degrees of freedom, on moderated variances.

Moderated variances (empirical Bayes, Smyth 2004, as limma does for genes):
with 3 processes a group's sample variance has 2 degrees of freedom, so it
is itself very noisy (a one-in-six chance of being under a quarter of the
true variance or over twice it), and so is the width of every interval built
from it. Two runs of one commit then disagreed on 8-10 of 59 verdicts, each
time between a verdict and "inconclusive", because one run's interval
happened to be narrow and the other's wide (bench/README.md). But all the
groups of one metric on one machine (every framework x model x mode) are
measured alike, and together they say how large a group's variance tends to
be: `fit_variance_prior` fits a scaled inverse-chi-square prior (s0², d0) to
their sample variances by moments of the log variances; each group's
variance is then (d0 s0² + d s²) / (d0 + d) with d0 + d degrees of freedom.
The data decide how much to pool: groups that differ in variance give a small
d0 (little pooling), groups alike a large one. tests/test_stats.py checks the
coverage, with equal and with unequal variances across groups.

Why not a hierarchical bootstrap (resample processes, then windows): with the
3 processes per side a grid can afford, a percentile bootstrap's resamples
hold at most 3 distinct process values, its spread is (n-1)/n of the true one
and it uses normal quantiles: its nominal 95 % interval covered the truth in
about 80 % of simulations (bench/README.md). A t interval over the process
means is the two-stage (nested) analysis of a balanced design: a process
mean's variance is the between-process variance plus the within-process
variance over the windows, so both levels are in it, and t's quantiles
account for the few processes; tests/test_stats.py checks its coverage.

A verdict needs a practical margin: a ratio within [1/(1 + m), 1 + m] (or a
difference within [-m, m]) is no difference that matters. With a claimed
direction, a condition is "supported" when its whole interval lies beyond
the margin on the claimed side, "contradicted" when beyond it on the other
side, "no meaningful difference" when it lies wholly inside the margin, and
"inconclusive" otherwise (it straddles a margin, or there is no interval).

Honest limits, stated in the report rather than hidden:
- with 3 processes a side the t quantile is large (about 2.8 for 4 degrees
  of freedom, less as the prior adds degrees of freedom): intervals are wide,
  and a verdict needs a large effect;
- the prior assumes the groups of a metric have comparable variances up to a
  spread it estimates; a group far noisier than the rest gets an interval too
  narrow for it (the coverage test bounds how much);
- each condition is tested at the given confidence on its own, with no
  correction for the many conditions of a claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as scipy_stats

from fwbench.errors import ConfigError, DataError

RATIO = "ratio"
DIFFERENCE = "difference"
KINDS = (RATIO, DIFFERENCE)
NO_EFFECT = {RATIO: 1.0, DIFFERENCE: 0.0}

# Claimed directions: the claim names the side it says is better (the metric
# knows whether better means higher or lower), or says the two are equivalent.
A_BETTER = "a_better"
B_BETTER = "b_better"
EQUIVALENT = "equivalent"
DIRECTIONS = (A_BETTER, B_BETTER, EQUIVALENT)

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
NO_MEANINGFUL_DIFFERENCE = "no meaningful difference"
INCONCLUSIVE = "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, NO_MEANINGFUL_DIFFERENCE, INCONCLUSIVE)

# An interval needs spread, and spread needs two units in every group.
MIN_SAMPLES = 2
DEFAULT_CONFIDENCE = 0.95
QUARTILES = (25.0, 75.0)


@dataclass(frozen=True)
class Comparison:
    """An effect (a ratio or a difference) with its interval (NaN when undefined)."""

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
class VariancePrior:
    """What the groups of one metric say about a group's variance: s0² with d0 degrees of freedom.

    df 0 is no prior (each group alone: plain Welch); df inf, all groups share the variance s0².
    Variances are of log values for ratios, of raw values for differences.
    """

    variance: float
    df: float

    def moderate(self, variance: float, df: float) -> tuple[float, float]:
        """A group's sample variance (df degrees of freedom) combined with the prior: (variance, df)."""
        if self.df == 0.0:
            return variance, df
        if math.isinf(self.df):
            return self.variance, math.inf
        return (self.df * self.variance + df * variance) / (self.df + df), self.df + df


NO_PRIOR = VariancePrior(math.nan, 0.0)
# Fewer groups than this say too little about the spread of variances to fit a prior.
MIN_PRIOR_GROUPS = 3


def _trigamma_inverse(value: float) -> float:
    """x with trigamma(x) = value (value > 0), by bisection on the log scale (trigamma decreases)."""
    low, high = 1e-8, 1e8
    for _ in range(200):
        middle = math.sqrt(low * high)
        if special.polygamma(1, middle) > value:
            low = middle
        else:
            high = middle
    return math.sqrt(low * high)


def fit_variance_prior(groups, kind: str = RATIO) -> VariancePrior:
    """The prior (s0², d0) of the groups' variances, by moments of their log sample variances (Smyth 2004).

    log s² of a group with d degrees of freedom has mean log s0² + digamma(d/2) - log(d/2) and variance
    trigamma(d0/2) + trigamma(d/2) under the prior; matching both gives s0² and d0. Groups with fewer
    than two values, no spread, or (for a ratio) a value <= 0 are left out; with fewer than
    MIN_PRIOR_GROUPS left, there is no prior.
    """
    _check_choice("kind", kind, KINDS)
    variances, dfs = [], []
    for index, group in enumerate(groups):
        sample = _sample(group, f"group {index}")
        if kind == RATIO:
            if (sample <= 0).any():
                continue  # no log variance; comparing this group raises its own error
            sample = np.log(sample)
        if sample.size >= MIN_SAMPLES and sample.var(ddof=1) > 0:
            variances.append(sample.var(ddof=1))
            dfs.append(sample.size - 1.0)
    if len(variances) < MIN_PRIOR_GROUPS:
        return NO_PRIOR
    half_df = np.asarray(dfs) / 2.0
    centred = np.log(variances) - special.digamma(half_df) + np.log(half_df)
    mean = float(centred.mean())
    spread = float(centred.var(ddof=1) - special.polygamma(1, half_df).mean())
    if spread <= 0:  # no more spread than sampling alone makes: one shared variance
        return VariancePrior(math.exp(mean), math.inf)
    half_prior_df = _trigamma_inverse(spread)
    variance = math.exp(mean + special.digamma(half_prior_df) - math.log(half_prior_df))
    return VariancePrior(variance, 2.0 * half_prior_df)


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
    """Median and quartiles: a spread summary that one slow window cannot drag."""

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


def check_margin(margin: object, name: str = "margin") -> float:
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ConfigError(f"{name}={margin!r} is invalid: accepted is a positive finite number, e.g. 0.05")
    return float(margin)


def _sample(values, name: str) -> np.ndarray:
    """One-dimensional float array without NaN (a missing measurement is not a zero)."""
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise DataError(f"sample {name} is not numeric: accepted are numbers (NaN marks a missing one)") from None
    if np.isinf(array).any():
        raise DataError(f"sample {name} holds an infinite value: accepted are finite numbers or NaN")
    return array[~np.isnan(array)]


def _check_positive(sample: np.ndarray, name: str) -> None:
    if (sample <= 0).any():
        raise DataError(f"sample {name} holds a value <= 0: a ratio needs positive values (use kind='difference')")


def contrast(groups, coefficients, higher_is_better: bool, kind: str = RATIO,
             confidence: float = DEFAULT_CONFIDENCE, prior: VariancePrior = NO_PRIOR) -> Comparison:
    """sum_g c_g * mean_g over groups of independent units, with Welch's t interval on moderated variances.

    kind="ratio" works on log values and returns exp() of everything: (+1, -1)
    is the ratio of geometric means of two groups. n_a / n_b of the result are
    the fewest units among the groups with a positive / negative coefficient.
    `prior` (fit_variance_prior over all groups of the metric) moderates each
    group's variance; NO_PRIOR leaves them alone.
    """
    _check_choice("kind", kind, KINDS)
    _check_confidence(confidence)
    if len(groups) != len(coefficients) or not groups:
        raise ConfigError(f"a contrast needs one coefficient per group: got {len(groups)} groups and "
                          f"{len(coefficients)} coefficients")
    samples = [_sample(group, f"group {index}") for index, group in enumerate(groups)]
    if kind == RATIO:
        for index, sample in enumerate(samples):
            _check_positive(sample, f"group {index}")
        samples = [np.log(sample) for sample in samples]
    weights = np.asarray(coefficients, dtype=float)
    sizes = [sample.size for sample in samples]
    n_a = min((n for n, c in zip(sizes, weights) if c > 0), default=0)
    n_b = min((n for n, c in zip(sizes, weights) if c < 0), default=0)
    common = {"kind": kind, "higher_is_better": higher_is_better, "confidence": confidence}
    back = np.exp if kind == RATIO else (lambda value: value)
    if min(sizes) == 0:
        return Comparison(math.nan, math.nan, math.nan, n_a, n_b, "no estimate: a group has no data", **common)
    estimate = float(sum(c * sample.mean() for c, sample in zip(weights, samples)))
    if min(sizes) < MIN_SAMPLES:
        method = f"no interval: fewer than {MIN_SAMPLES} independent processes in a group (n={sizes})"
        return Comparison(float(back(estimate)), math.nan, math.nan, n_a, n_b, method, **common)
    moderated = [prior.moderate(float(sample.var(ddof=1)), sample.size - 1.0) for sample in samples]
    parts = np.array([c * c * group_variance / sample.size
                      for c, sample, (group_variance, _) in zip(weights, samples, moderated)])
    variance = float(parts.sum())
    if variance == 0.0 or all(math.isinf(group_df) for _, group_df in moderated):
        df = math.inf
    else:
        df = variance ** 2 / float(sum(part ** 2 / group_df for part, (_, group_df) in zip(parts, moderated)))
    half_width = float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, df)) * math.sqrt(variance)
    scale = "log values" if kind == RATIO else "values"
    pooling = "" if prior.df == 0.0 else f", variances moderated by a prior of {prior.df:.1f} df"
    method = f"Welch t interval over processes ({scale}; n={sizes}, df={df:.1f}{pooling})"
    return Comparison(float(back(estimate)), float(back(estimate - half_width)), float(back(estimate + half_width)),
                      n_a, n_b, method, **common)


def compare(a, b, higher_is_better: bool, kind: str = RATIO, confidence: float = DEFAULT_CONFIDENCE,
            prior: VariancePrior = NO_PRIOR) -> Comparison:
    """a versus b: the ratio of their geometric means (or the difference of their means), one value per unit."""
    return contrast([a, b], [1.0, -1.0], higher_is_better, kind=kind, confidence=confidence, prior=prior)


def no_difference_zone(kind: str, margin: float) -> tuple[float, float]:
    """The effects that are no difference that matters: [1/(1+m), 1+m] for a ratio, [-m, m] for a difference."""
    margin = check_margin(margin)
    return (1.0 / (1.0 + margin), 1.0 + margin) if kind == RATIO else (-margin, margin)


def verdict(comparison: Comparison, claimed_direction: str, margin: float) -> str:
    """supported / contradicted / no meaningful difference / inconclusive for a claim about a versus b.

    A_BETTER / B_BETTER: the interval against the margin's zone (module
    docstring). EQUIVALENT: see equivalence_verdict.
    """
    _check_choice("claimed_direction", claimed_direction, DIRECTIONS)
    if claimed_direction == EQUIVALENT:
        return equivalence_verdict(comparison, margin)
    low, high = no_difference_zone(comparison.kind, margin)
    if not comparison.has_interval:
        return INCONCLUSIVE
    if comparison.ci_low > high:
        observed_a_greater = True
    elif comparison.ci_high < low:
        observed_a_greater = False
    elif low <= comparison.ci_low and comparison.ci_high <= high:
        return NO_MEANINGFUL_DIFFERENCE
    else:
        return INCONCLUSIVE
    claimed_a_greater = comparison.higher_is_better == (claimed_direction == A_BETTER)
    return SUPPORTED if observed_a_greater == claimed_a_greater else CONTRADICTED


def equivalence_verdict(comparison: Comparison, margin: float) -> str:
    """Equivalence of a and b within the margin (a claim that they do not differ), TOST-like.

    - "supported": the whole interval lies inside the margin's zone. With a 95 %
      interval this is two one-sided tests at 2.5 % each (the textbook TOST
      uses a 90 % interval, so this is the stricter reading).
    - "contradicted": the whole interval lies beyond one edge of the zone.
    - "inconclusive": anything else, including a single unit (no interval).
    """
    low, high = no_difference_zone(comparison.kind, margin)
    if not comparison.has_interval:
        return INCONCLUSIVE
    if low < comparison.ci_low and comparison.ci_high < high:
        return SUPPORTED
    if comparison.ci_low > high or comparison.ci_high < low:
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
