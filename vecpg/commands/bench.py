"""``vecpg bench``: env-steps per second of vecpg's vector env against Gymnasium and peers.

Runs :mod:`vecpg.bench.sampling` over a grid, prints the table and writes every point
to a JSON file. The default is a quick CartPole-v1 grid; ``benchmarks/sampling.py`` runs the
full grid and checks the targets.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from vecpg.errors import ConfigError

HELP = "Benchmark sampling speed (env-steps/s) of vecpg against Gymnasium's vectorizers and peers."

_WORKLOADS = ("cartpole", "busy", "image")
_PEERS = ("sync", "async", "sb3", "sb3-dummy", "vecpg-sb3", "envpool", "pufferlib")
_WAITS = ("default", "auto", "block", "spin")


def _workers(text: str) -> int | None:
    if text in ("default", "none", "None"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'default', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"num_workers must be >= 1, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=_WORKLOADS,
        default=["cartpole"],
        help="envs to step: cartpole (CartPole-v1), busy (BusyEnv: --step-cost-us of CPU "
        "work per step), image (84x84x4 uint8 observations)",
    )
    parser.add_argument(
        "--num-envs",
        nargs="+",
        type=_positive_int,
        default=[8, 32],
        help="numbers of envs per vector env (grid axis)",
    )
    parser.add_argument(
        "--num-workers",
        nargs="+",
        type=_workers,
        default=[None, 1, 2],
        help="vecpg worker counts (grid axis); 'default' lets vecpg choose",
    )
    parser.add_argument(
        "--wait",
        nargs="+",
        choices=_WAITS,
        default=["default"],
        help="vecpg waiting strategies (grid axis); 'default' lets vecpg choose",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=_PEERS,
        default=["sync", "async"],
        help="other vectorizers measured in the same run (missing packages are skipped)",
    )
    parser.add_argument(
        "--repeats", type=_positive_int, default=3, help="runs per point; the median is reported"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="timed stepping per run, in seconds"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.1,
        help="untimed stepping per run before the timed window, in seconds",
    )
    parser.add_argument(
        "--min-steps",
        type=_positive_int,
        default=10,
        help="minimum timed vector steps per run, however long they take",
    )
    parser.add_argument(
        "--step-cost-us",
        type=float,
        default=100.0,
        help="CPU work per step of the busy workload, in microseconds",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for resets and random actions")
    parser.add_argument(
        "--no-checks",
        action="store_true",
        help="skip the parallel-capacity, worker-memory and cold-start measurements",
    )
    parser.add_argument(
        "--out",
        default="vecpg_bench.json",
        help="JSON file to write every point, the settings and machine info to",
    )


def _validate(args: argparse.Namespace) -> None:
    if args.seconds < 0:
        raise ConfigError(f"--seconds must be >= 0, got {args.seconds}")
    if args.warmup_seconds < 0:
        raise ConfigError(f"--warmup-seconds must be >= 0, got {args.warmup_seconds}")
    if args.step_cost_us < 0:
        raise ConfigError(f"--step-cost-us must be >= 0, got {args.step_cost_us}")


def run_benchmark(args: argparse.Namespace, num_envs: Any = None) -> dict[str, Any]:
    """Runs the grid described by ``args``; ``num_envs`` may override it per workload."""
    from vecpg.bench import sampling as sampling_benchmark

    _validate(args)
    return sampling_benchmark.run_grid(
        workloads=args.workloads,
        num_envs=num_envs if num_envs is not None else args.num_envs,
        num_workers=list(dict.fromkeys(args.num_workers)),
        waits=[None if wait == "default" else wait for wait in dict.fromkeys(args.wait)],
        peers=list(dict.fromkeys(args.peers)),
        repeats=args.repeats,
        seconds=args.seconds,
        warmup_seconds=args.warmup_seconds,
        min_steps=args.min_steps,
        step_cost_us=args.step_cost_us,
        seed=args.seed,
        checks=not args.no_checks,
    )


def write_report(report: dict[str, Any], path: str) -> None:
    """Writes ``report`` as indented JSON, creating the parent directory."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
        file.write("\n")


def run(args: argparse.Namespace) -> int:
    from vecpg.bench import sampling as sampling_benchmark

    report = run_benchmark(args)
    print()
    print(sampling_benchmark.format_table(report))
    write_report(report, args.out)
    print(f"\nwrote {args.out}")
    return 0
