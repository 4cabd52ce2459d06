"""Speed and memory of one framework x model x mode, or the table of all of them.

    python scripts/bench.py framework=tf model=convnet bench.mode=xla threads=2
    python scripts/bench.py aggregate experiment=default    # bench_results.csv + bench_summary.csv
"""

import sys

from fwbench.bench.run import aggregate_results, bench_variant
from fwbench.cli import run_app

AGGREGATE = "aggregate"

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == [AGGREGATE]:
        run_app(aggregate_results, argv[1:])
    else:
        run_app(bench_variant, argv)
