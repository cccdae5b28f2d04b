"""An Atari learning curve: ``vecpg train --env ALE/<Game>-v5`` with the atari preset,
its game score at a few step counts, beside a random policy's.

    python benchmarks/atari_curve.py --game breakout                 # 1M steps, seed 1
    python benchmarks/atari_curve.py --game pong --steps 2000000 --run-dir runs/pong_curve

The run is ``vecpg train --env ALE/<Game>-v5 --total-steps STEPS --seed SEED`` and nothing
else (the preset decides; the learning rate anneals over STEPS). A run dir that already
holds a finished run is read instead of trained again, so a long run started by hand (in
the background) is reported with the same command, and one that stopped short resumes
from its last checkpoint. The score at step S is
``episode_return_mean`` of the first metrics row at or after S: the mean game score
(every life, unclipped) of the last 20 finished games. The random policy plays
``--random-games`` full games with uniform random actions through
``vecpg.atari.make_env`` (no life-loss ends, raw rewards). The report goes to
``--out`` (JSON) and is printed as a table; ``vecpg plot RUN_DIR`` draws the whole curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GAMES = {"breakout": "ALE/Breakout-v5", "pong": "ALE/Pong-v5"}
FRACTIONS = (0.25, 0.5, 1.0)  # of --steps: 250k, 500k and 1M for the default budget


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as stream:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(stream)
        ]


def score_at(rows: Sequence[dict[str, float]], step: int) -> dict[str, float] | None:
    """The first row at or after ``step`` (global steps), or None if the run stopped short."""
    for row in rows:
        if row["global_step"] >= step:
            return row
    return None


def random_scores(env_id: str, games: int, seed: int) -> list[float]:
    """Game scores of uniform random play, one full game (all lives) each."""
    from vecpg.atari import make_env

    env = make_env(env_id, terminal_on_life_loss=False, clip_rewards=False)
    env.action_space.seed(seed)
    scores = []
    try:
        for game in range(games):
            env.reset(seed=seed + game)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = bool(terminated or truncated)
            scores.append(total)
    finally:
        env.close()
    return scores


def train(env_id: str, steps: int, seed: int, run_dir: Path, resume: bool) -> None:
    """Train the run, or continue it from its last checkpoint when it stopped short."""
    command = [sys.executable, "-m", "vecpg", "train"]
    if resume:
        command += ["--resume", str(run_dir)]
    else:
        command += [
            "--env", env_id, "--total-steps", str(steps), "--seed", str(seed),
            "--run-dir", str(run_dir), "--quiet", "--no-tensorboard",
        ]  # fmt: skip
    subprocess.run(command, check=True)


def report(
    env_id: str, steps: int, rows: Sequence[dict[str, float]], randoms: Sequence[float]
) -> dict[str, Any]:
    points = []
    for fraction in FRACTIONS:
        step = int(steps * fraction)
        row = score_at(rows, step)
        points.append(
            {
                "steps": step,
                "score": None if row is None else row["episode_return_mean"],
                "at_global_step": None if row is None else int(row["global_step"]),
                "wall_s": None if row is None else row["time_s"],
            }
        )
    last = rows[-1] if rows else {}
    return {
        "env": env_id,
        "steps": steps,
        "points": points,
        "wall_s": last.get("time_s"),
        "sampling_s": sum(row.get("sampling_time_s", 0.0) for row in rows),
        "update_s": sum(row.get("update_time_s", 0.0) for row in rows),
        "random_mean": statistics.fmean(randoms),
        "random_std": statistics.pstdev(randoms),
        "random_games": len(randoms),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['env']}, atari preset, {result['steps']:,} env steps")
    print("| env steps | game score (last 20 games) | wall s |")
    print("| ---: | ---: | ---: |")
    for point in result["points"]:
        score = "-" if point["score"] is None else f"{point['score']:.1f}"
        wall = "-" if point["wall_s"] is None else f"{point['wall_s']:.0f}"
        print(f"| {point['steps']:,} | {score} | {wall} |")
    print(
        f"random policy: {result['random_mean']:.1f} ± {result['random_std']:.1f} "
        f"({result['random_games']} games)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", choices=sorted(GAMES), default="breakout")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--random-games", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "atari_curve.json")
    args = parser.parse_args(argv)
    env_id = GAMES[args.game]
    run_dir = args.run_dir or HERE / "results" / f"atari_curve_{args.game}_{args.seed}"
    rows = read_metrics(run_dir)
    if not rows or rows[-1]["global_step"] < args.steps:
        train(env_id, args.steps, args.seed, run_dir, resume=bool(rows))
        rows = read_metrics(run_dir)
    result = report(env_id, args.steps, rows, random_scores(env_id, args.random_games, args.seed))
    result["run_dir"] = str(run_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
