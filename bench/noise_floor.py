"""How steady is this machine? The trial-to-trial CV of a fixed workload, with no framework.

The bench asks for a convnet CV of at most 5 % over 5 trials. Whether a machine
can show that is a property of the machine: this script runs one fixed NumPy
workload (float32 matrix products on `--threads` BLAS threads) as back-to-back
windows, then groups consecutive windows into trials of 0.5-4 s and reports,
for each trial length, the CV over groups of 5 consecutive trials (what one
bench job sees) and over the whole run.

    python bench/noise_floor.py                     # about 60 s, 2 threads
    python bench/noise_floor.py --seconds 120 --threads 2

Where the CV stays above 5 % at every trial length, the machine's own drift,
not the bench, sets the floor. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

TRIALS_PER_JOB = 5
# Trial lengths to report, in seconds (each a whole number of base windows).
TRIAL_SECONDS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
MATRIX_SIZE = 512
BASE_WINDOW_S = 0.1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total run time (default 60)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2, the bench's)")
    args = parser.parse_args(argv)
    if args.seconds < 10 or args.threads < 1:
        parser.error(f"--seconds must be >= 10 and --threads >= 1, got {args.seconds} and {args.threads}")
    return args


def base_windows(seconds: float):
    """Durations of back-to-back windows of a fixed number of matrix products (about 0.1 s each)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((MATRIX_SIZE, MATRIX_SIZE), dtype=np.float32)
    a @ a  # starts the BLAS threads
    calibration = 10
    start = time.perf_counter()
    for _ in range(calibration):
        a @ a
    products = max(1, round(BASE_WINDOW_S * calibration / (time.perf_counter() - start)))
    durations = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        window_start = time.perf_counter()
        for _ in range(products):
            a @ a
        durations.append(time.perf_counter() - window_start)
    return np.array(durations)


def cv(values) -> float:
    return float(values.std(ddof=1) / values.mean())


def report(durations) -> list[str]:
    import numpy as np

    base = float(np.median(durations))
    lines = [f"{len(durations)} windows of {base:.3f} s (median); CV of throughput per trial length:",
             "trial s | CV per 5 trials: median  max  (jobs) | CV over the run"]
    for seconds in TRIAL_SECONDS:
        per_trial = max(1, round(seconds / base))
        trials = len(durations) // per_trial
        if trials < 2 * TRIALS_PER_JOB:
            break
        throughput = 1.0 / durations[: trials * per_trial].reshape(trials, per_trial).sum(axis=1)
        jobs = [cv(throughput[i:i + TRIALS_PER_JOB]) for i in range(0, trials - TRIALS_PER_JOB + 1, TRIALS_PER_JOB)]
        lines.append(f"{per_trial * base:7.2f} | {100 * np.median(jobs):13.1f} % {100 * max(jobs):4.1f} % ({len(jobs):3d})"
                     f" | {100 * cv(throughput):5.1f} %")
    return lines


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # BLAS reads its thread count when NumPy loads.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    print(f"fixed NumPy workload, {args.threads} threads, {args.seconds:.0f} s", flush=True)
    print("\n".join(report(base_windows(args.seconds))))


if __name__ == "__main__":
    main(sys.argv[1:])
