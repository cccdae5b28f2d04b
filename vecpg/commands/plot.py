"""``vecpg plot``: learning curves of one or more runs as a PNG."""

from __future__ import annotations

import argparse

HELP = "plot episode return against env steps and wall time for one or more runs"
DESCRIPTION = (
    "Write a PNG of episode_return_mean from each run's metrics.csv against env steps "
    "(and wall time), runs overlaid and labelled by their directory names. Needs the plot "
    "extra (matplotlib)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by vecpg train"
    )
    parser.add_argument(
        "--out", default="returns.png", metavar="FILE.png", help="image file to write"
    )
    parser.add_argument(
        "--x",
        choices=("steps", "time", "both"),
        default="both",
        help="x axis: env steps, wall time, or both side by side",
    )
    parser.add_argument("--title", default=None, help="figure title")


def run(args: argparse.Namespace) -> int:
    from vecpg.run.plot import plot_runs

    path = plot_runs(args.run_dirs, args.out, x=args.x, title=args.title)
    print(f"wrote {path}")
    return 0
