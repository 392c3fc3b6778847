"""``python -m analysis OUT``: aggregate a results folder and print the verdicts."""

from __future__ import annotations

import argparse
import sys

from analysis.aggregation import aggregate
from analysis.claims import MIN_COMPLETE_TRIALS
from pipeline.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("out", help="a results folder (with manifest.json and trials/)")
    parser.add_argument("--min-complete", type=int, default=MIN_COMPLETE_TRIALS, metavar="N",
                        help=f"complete trials a cell needs for a verdict (default {MIN_COMPLETE_TRIALS})")
    parser.add_argument("--no-figures", action="store_true",
                        help="tables, verdicts and report without drawing figures (seconds on a large grid)")
    args = parser.parse_args(argv)
    try:
        result = aggregate(args.out, min_complete=args.min_complete, figures=not args.no_figures)
    except UserError as error:  # a bad folder, a link not followed, another aggregate that never finished
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    for line in result.verdict_lines:
        print(line)
    print(f"report: {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
