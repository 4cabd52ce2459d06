"""Which verdicts differ between two reports? Two runs on one machine, or the same commit on two machines.

    python scripts/compare_reports.py reports/default results-of-another-run/reports/default
    python scripts/compare_reports.py run1/claims.csv run2/claims.csv

A and B are report directories (each holds claims.csv) or claims tables. It
prints how many conditions keep their verdict, every condition that changed
(flagging supported <-> contradicted flips) and how many intervals do not
overlap, those counts again over distinct measurements, and, where both
directories hold results.csv, how much faster or slower B's bench ran than A's.
Exit status 0 when both tables were read, 2 on bad input.
"""

import argparse
import sys

from fwbench.errors import FwbenchError
from fwbench.reporting.compare import compare_tables, describe, read_claims, speed_shift

EXIT_BAD_INPUT = 2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="first report directory or claims.csv")
    parser.add_argument("b", help="second report directory or claims.csv")
    args = parser.parse_args(argv)
    try:
        comparison = compare_tables(read_claims(args.a), read_claims(args.b))
    except FwbenchError as error:
        print(f"compare_reports: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(describe(comparison, args.a, args.b, speed_shift(args.a, args.b)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
