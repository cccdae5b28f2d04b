"""When does ``vecpg train --compile`` pay? Update time eager against compiled, same preset.

Every run is a fresh process, ``vecpg train --env ENV --algo ALGO --seed S --total-steps N
--quiet --no-tensorboard --checkpoint-interval 0 [--compile]``, N being ``--updates``
rollouts of the preset's ``num_envs x num_steps``. Eager and compiled runs alternate (seed
1 eager, seed 1 compiled, seed 2 eager, ...) so that a slow phase of the machine hits both.
Each compiled run starts with an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR`` in a
fresh directory), so its first update holds the whole compile, as on a user's first run.

From each run's metrics.csv (seconds):

- ``first_update_s``: the first update's ``update_time_s`` (compiled: compile included);
- ``update_s``: the median ``update_time_s`` of the later updates;
- ``sampling_s``: the median ``sampling_time_s``.

The summary takes the median of each over the runs of a mode, then ``update_ratio``
(compiled / eager ``update_s``), ``compile_s`` (compiled minus eager ``first_update_s``) and
the break-even point, ``compile_s / (eager update_s - compiled update_s)`` updates (and in
env steps), after which a compiled run is ahead; None when compiling does not make the
update faster. Results: benchmarks/TRAINING.md; JSON: ``--out``.

Usage::

    python benchmarks/compile.py                                    # HalfCheetah-v5 PPO, CPU
    python benchmarks/compile.py --env CartPole-v1 --updates 20 --repeats 5
    python benchmarks/compile.py --device cuda
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vecpg.bench.provenance import versions

MODES = ("eager", "compiled")


def train_command(
    env: str, algo: str, seed: int, total_steps: int, run_dir: Path, device: str, compiled: bool
) -> list[str]:
    """The ``vecpg train`` command line of one run."""
    command = [sys.executable, "-m", "vecpg", "train", "--env", env, "--algo", algo]
    command += ["--seed", str(seed), "--total-steps", str(total_steps), "--device", device]
    command += ["--run-dir", str(run_dir), "--quiet", "--no-tensorboard"]
    command += ["--checkpoint-interval", "0"]
    return command + (["--compile"] if compiled else [])


def run_times(rows: Sequence[dict[str, str]]) -> dict[str, float]:
    """``first_update_s``, ``update_s`` (median of the later updates) and ``sampling_s``
    (median) from a run's metrics rows; needs at least two updates."""
    if len(rows) < 2:
        raise ValueError(f"need at least 2 updates to compare, the run has {len(rows)}")
    updates = [float(row["update_time_s"]) for row in rows]
    return {
        "first_update_s": updates[0],
        "update_s": statistics.median(updates[1:]),
        "sampling_s": statistics.median(float(row["sampling_time_s"]) for row in rows),
    }


def summarize(runs: Sequence[dict[str, Any]], steps_per_update: int) -> dict[str, Any]:
    """Medians per mode over the runs that finished, the ratio and the break-even point."""
    summary: dict[str, Any] = {}
    for mode in MODES:
        done = [run for run in runs if run["mode"] == mode and not run.get("error")]
        summary[mode] = {
            "runs": len(done),
            **{
                key: statistics.median(run[key] for run in done) if done else None
                for key in ("first_update_s", "update_s", "sampling_s")
            },
        }
    eager, compiled = summary["eager"], summary["compiled"]
    summary["update_ratio"] = summary["compile_s"] = None
    summary["break_even_updates"] = summary["break_even_steps"] = None
    if eager["runs"] and compiled["runs"]:
        summary["update_ratio"] = compiled["update_s"] / eager["update_s"]
        summary["compile_s"] = compiled["first_update_s"] - eager["first_update_s"]
        saved = eager["update_s"] - compiled["update_s"]
        if saved > 0:
            updates = max(summary["compile_s"], 0.0) / saved
            summary["break_even_updates"] = updates
            summary["break_even_steps"] = updates * steps_per_update
    return summary


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(
        f"\n{report['algo']} on {report['env']} ({report['device']}), "
        f"{report['steps_per_update']:,} steps per update, median of {report['repeats']} runs"
    )
    print(f"{'mode':<9} {'runs':>4} {'first update s':>14} {'update s':>9} {'sampling s':>10}")
    for mode in MODES:
        row = summary[mode]
        print(
            f"{mode:<9} {row['runs']:>4} {_fmt(row['first_update_s'], '.2f'):>14} "
            f"{_fmt(row['update_s'], '.3f'):>9} {_fmt(row['sampling_s'], '.3f'):>10}"
        )
    print(
        f"compiled / eager update time: {_fmt(summary['update_ratio'], '.2f')}; compile: "
        f"{_fmt(summary['compile_s'], '.1f')} s; even after "
        f"{_fmt(summary['break_even_updates'], ',.0f')} updates "
        f"({_fmt(summary['break_even_steps'], ',.0f')} env steps)"
    )


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from vecpg.run.config import resolve_config

    config = resolve_config({}, {"env": args.env, "algo": args.algo})
    steps_per_update = config.num_envs * config.num_steps
    total_steps = steps_per_update * args.updates
    runs: list[dict[str, Any]] = []
    for seed in range(1, args.repeats + 1):
        for mode in MODES:
            run_dir = work / f"{mode}_{seed}"
            command = train_command(
                args.env, args.algo, seed, total_steps, run_dir, args.device, mode == "compiled"
            )
            environment = dict(os.environ)
            if mode == "compiled":
                environment["TORCHINDUCTOR_CACHE_DIR"] = str(work / f"inductor_{seed}")
            start = time.perf_counter()
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=args.timeout, env=environment
            )
            run: dict[str, Any] = {
                "mode": mode,
                "seed": seed,
                "wall_s": time.perf_counter() - start,
            }
            if result.returncode != 0:
                run["error"] = f"exit code {result.returncode}: {result.stderr.strip()[-300:]}"
            else:
                with open(run_dir / "metrics.csv", newline="") as file:
                    run.update(run_times(list(csv.DictReader(file))))
            runs.append(run)
            state = run.get("error") or f"update {run['update_s']:.3f} s"
            print(f"  {mode:<9} seed {seed}: {state}", flush=True)
    return {
        "env": args.env,
        "algo": args.algo,
        "device": args.device,
        "repeats": args.repeats,
        "steps_per_update": steps_per_update,
        "total_steps": total_steps,
        "command": " ".join(
            train_command(args.env, args.algo, 1, total_steps, Path("DIR"), args.device, True)
        ),
        "versions": versions(["torch", "gymnasium", "mujoco"]),
        "runs": runs,
        "summary": summarize(runs, steps_per_update),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    # REINFORCE has no compiled path: --compile covers the PPO and A2C losses.
    parser.add_argument("--algo", default="ppo", choices=("ppo", "a2c"))
    parser.add_argument("--updates", type=int, default=10, help="updates per run (>= 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--out", default="benchmarks/results/compile.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.updates < 2 or args.repeats < 1:
        raise SystemExit("--updates must be >= 2 and --repeats >= 1")
    with tempfile.TemporaryDirectory(prefix="vecpg_compile_") as work:
        report = run_benchmark(args, Path(work))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
