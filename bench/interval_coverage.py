"""How often does a nominal 95 % interval of a bench ratio cover the truth? Simulated, with a known truth.

Each simulated condition has two variants measured in `processes` processes
of `windows` windows each. A process's log throughput is the variant's true
log mean plus a between-process effect (sd `between`), and each window adds
within-process noise (sd `within`). Two interval methods for the ratio a/b
are scored on the same data:

- process: fwbench.stats.compare on the process means (Welch t, log scale),
  what the report uses;
- hierarchical bootstrap: resample processes, then windows within each
  resampled process, percentile interval of the ratio of means;
- windows as trials: fwbench.stats.compare on every window as if each were
  independent (what a per-window interval amounts to).

    python bench/interval_coverage.py --simulations 1000
"""

from __future__ import annotations

import argparse

import numpy as np

from fwbench.stats import compare

TRUE_RATIO = 1.2
BOOTSTRAP_RESAMPLES = 2000


def simulate(rng, processes: int, windows: int, between: float, within: float, log_mean: float) -> np.ndarray:
    """windows x processes throughputs (rows: processes)."""
    process_effects = rng.normal(0.0, between, size=(processes, 1))
    return np.exp(log_mean + process_effects + rng.normal(0.0, within, size=(processes, windows)))


def hierarchical_bootstrap(rng, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    def resampled_means(x):
        picks = rng.integers(0, x.shape[0], size=(BOOTSTRAP_RESAMPLES, x.shape[0]))
        windows = rng.integers(0, x.shape[1], size=(BOOTSTRAP_RESAMPLES, x.shape[0], x.shape[1]))
        chosen = x[picks[..., None], windows]
        return chosen.mean(axis=(1, 2))

    ratios = resampled_means(a) / resampled_means(b)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def coverage(simulations: int, processes: int, windows: int, between: float, within: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    hits = {"process": 0, "hierarchical bootstrap": 0, "windows as trials": 0}
    for _ in range(simulations):
        a = simulate(rng, processes, windows, between, within, np.log(TRUE_RATIO * 1000.0))
        b = simulate(rng, processes, windows, between, within, np.log(1000.0))
        by_process = compare(a.mean(axis=1), b.mean(axis=1), higher_is_better=True)
        by_window = compare(a.ravel(), b.ravel(), higher_is_better=True)
        boot = hierarchical_bootstrap(rng, a, b)
        # The truth of each method's estimand: geometric means (log scale) for compare, means for the bootstrap;
        # with equal spreads on both sides both are TRUE_RATIO.
        hits["process"] += by_process.ci_low <= TRUE_RATIO <= by_process.ci_high
        hits["windows as trials"] += by_window.ci_low <= TRUE_RATIO <= by_window.ci_high
        hits["hierarchical bootstrap"] += boot[0] <= TRUE_RATIO <= boot[1]
    return {method: count / simulations for method, count in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--within", type=float, default=0.05, help="sd of log throughput between windows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.simulations} simulations, {args.windows} windows per process, within-process sd {args.within}")
    print("processes  between sd | process (Welch t) | hierarchical bootstrap | windows as trials")
    for processes in (2, 3, 4, 6):
        for between in (0.02, 0.1, 0.3):
            result = coverage(args.simulations, processes, args.windows, between, args.within, args.seed)
            print(f"{processes:9d}  {between:10.2f} | {result['process']:17.1%} | "
                  f"{result['hierarchical bootstrap']:22.1%} | {result['windows as trials']:17.1%}")


if __name__ == "__main__":
    main()
