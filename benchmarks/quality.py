"""Learning quality of ``vecpg train --env X`` with X's preset, beside published figures.

    python benchmarks/quality.py                           # every cell of the table, 3 seeds
    python benchmarks/quality.py --envs CartPole-v1 Acrobot-v1 --algos ppo a2c
    python benchmarks/quality.py --report                  # print the table from the results
    python benchmarks/quality.py --report --plots docs/quality   # and one PNG per row

Every cell (env, algo, seed) is one fresh ``vecpg train --env ENV --algo ALGO --seed SEED``
process, with no hyperparameter flag (the env's preset decides; ``--run-dir``, ``--quiet``
and ``--no-tensorboard`` only say where and how to run), at the preset's step budget. Its
final return is the ``episode_return_mean`` of the last metrics row: the mean return of
the last 20 training episodes (stochastic policy). Its deterministic score is ``vecpg eval``
of the last checkpoint: the mean return of 20 episodes of the policy's mode/mean, on seeds
training never used. Each cell appends one JSON line to the results file as it finishes,
so an interrupted table resumes where it stopped (finished cells are skipped; ``--rerun``
runs them again; finished cells written without a deterministic score get one).

The random-policy score of each env (uniform random actions, ``--random-episodes``
episodes, seeded) is measured once and stored in the same file; the normalized score is
``(vecpg - random) / (published - random)``, with vecpg's score of the published figure's
kind (rl-zoo's are deterministic evaluations, CleanRL's training returns); the acceptance
target is >= 0.9. ``--plots DIR`` draws each row's learning curves with ``vecpg plot``:
the finished seeds' training return against env steps, one PNG per (env, algo).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vecpg.bench.provenance import versions

HERE = Path(__file__).resolve().parent
ENVS = [
    "CartPole-v1",
    "Acrobot-v1",
    "LunarLander-v3",
    "Pendulum-v1",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
]
ALGOS = ["ppo", "a2c"]


class Published(NamedTuple):
    """A published score: its mean and std, step budget, metric and source.

    ``metric`` says which of vecpg's two scores it is compared with: ``"deterministic"``
    (rl-zoo's benchmark.md: one trained agent run with its deterministic policy, against
    ``vecpg eval``'s mean) or ``"training"`` (CleanRL: the return of training episodes,
    mean over seeds, against vecpg's mean of its last 20 training episodes).
    """

    mean: float
    std: float
    budget: int
    metric: str
    source: str


_ZOO = "rl-zoo benchmark.md @ 02a1a901"
_ZOO_LATER = "rl-zoo benchmark.md @ 0088472b"
_CLEANRL_PPO = "CleanRL docs/rl-algorithms/ppo.md, ppo_continuous_action.py"
_DET, _TRAIN = "deterministic", "training"
# rl-zoo's figures are for older env versions (v2/v3/v0 where named), CleanRL's for MuJoCo v2.
PUBLISHED: dict[tuple[str, str], Published] = {
    ("CartPole-v1", "ppo"): Published(500.0, 0.0, 100_000, _DET, _ZOO),
    ("CartPole-v1", "a2c"): Published(500.0, 0.0, 500_000, _DET, _ZOO),
    ("Acrobot-v1", "ppo"): Published(-73.506, 18.201, 1_000_000, _DET, _ZOO),
    ("Acrobot-v1", "a2c"): Published(-83.353, 17.213, 500_000, _DET, _ZOO),
    ("LunarLander-v3", "ppo"): Published(
        242.119, 31.823, 1_000_000, _DET, f"{_ZOO} (LunarLander-v2)"
    ),
    ("LunarLander-v3", "a2c"): Published(
        155.751, 80.419, 200_000, _DET, f"{_ZOO} (LunarLander-v2)"
    ),
    ("Pendulum-v1", "ppo"): Published(-172.225, 104.159, 100_000, _DET, _ZOO_LATER),
    ("Pendulum-v1", "a2c"): Published(-162.965, 103.210, 1_000_000, _DET, _ZOO_LATER),
    # The MuJoCo PPO preset's own source.
    ("HalfCheetah-v5", "ppo"): Published(
        1822.82, 928.11, 1_000_000, _TRAIN, f"{_CLEANRL_PPO} (HalfCheetah-v2)"
    ),
    ("Hopper-v5", "ppo"): Published(
        2231.12, 656.72, 1_000_000, _TRAIN, f"{_CLEANRL_PPO} (Hopper-v2)"
    ),
    ("Walker2d-v5", "ppo"): Published(
        3050.09, 1136.21, 1_000_000, _TRAIN, f"{_CLEANRL_PPO} (Walker2d-v2)"
    ),
    ("HalfCheetah-v5", "a2c"): Published(
        3041.174, 157.265, 1_000_000, _DET, f"{_ZOO_LATER} (HalfCheetah-v3)"
    ),
    ("Hopper-v5", "a2c"): Published(733.454, 376.574, 1_000_000, _DET, f"{_ZOO_LATER} (Hopper-v3)"),
}
EVAL_EPISODES = 20
SEGMENTS_FILE = "quality_segments.json"
RESULT_KINDS = ("cell", "random")
# The versions every figure depends on (Box2D's distribution name varies by build).
VERSIONED_PACKAGES = ("torch", "gymnasium", "numpy", "mujoco", "box2d", "box2d-py", "Box2D")


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as stream:
        return [json.loads(line) for line in stream if line.strip()]


def append_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        stream.write(json.dumps(result) + "\n")
        stream.flush()


def train_command(env: str, algo: str, seed: int, run_dir: Path) -> list[str]:
    """``vecpg train`` with the env's preset and nothing else that changes the training."""
    return [
        sys.executable, "-m", "vecpg", "train", "--env", env, "--algo", algo,
        "--seed", str(seed), "--run-dir", str(run_dir), "--quiet", "--no-tensorboard",
    ]  # fmt: skip


def eval_command(run_dir: Path) -> list[str]:
    """``vecpg eval`` of the run's last checkpoint: its deterministic policy, fresh seeds."""
    return [
        sys.executable, "-m", "vecpg", "eval", str(run_dir),
        "--episodes", str(EVAL_EPISODES), "--json",
    ]  # fmt: skip


def deterministic_return(run_dir: Path, timeout_s: float) -> float:
    """Mean return of ``EVAL_EPISODES`` deterministic episodes, NaN if the eval failed."""
    if not run_dir.is_dir():
        return math.nan
    try:
        completed = subprocess.run(
            eval_command(run_dir), capture_output=True, text=True, timeout=timeout_s, cwd=run_dir
        )
    except subprocess.TimeoutExpired:
        return math.nan
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return math.nan
    return float(json.loads(lines[-1])["deterministic"]["return_mean"])


def list_checkpoints(run_dir: Path) -> list[int]:
    """The steps of the run's checkpoints, ascending (vecpg's own listing)."""
    from vecpg.run.checkpoint import list_checkpoints as checkpoints

    return [step for step, _ in checkpoints(run_dir)]


def last_row(metrics: Path) -> dict[str, str] | None:
    import csv

    if not metrics.exists():
        return None
    with metrics.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    return rows[-1] if rows else None


def resume_command(run_dir: Path) -> list[str]:
    """``vecpg train --resume`` of a cell cut short: on from its latest checkpoint."""
    return [
        sys.executable, "-m", "vecpg", "train", "--resume", str(run_dir),
        "--quiet", "--no-tensorboard",
    ]  # fmt: skip


def _segments(run_dir: Path) -> list[dict[str, Any]]:
    """The cell's processes so far: ``{"started": epoch s, "wall_s": s or None}`` each.

    A segment whose process was killed with the harness has no ``wall_s``; it is closed
    with the last write of ``metrics.csv`` (its last update) before the next one starts.
    """
    path = run_dir / SEGMENTS_FILE
    segments: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    metrics = run_dir / "metrics.csv"
    for segment in segments:
        if segment["wall_s"] is None:
            ended = metrics.stat().st_mtime if metrics.exists() else segment["started"]
            segment["wall_s"] = round(max(0.0, ended - segment["started"]), 1)
    return segments


def _run_segment(
    command: list[str], run_dir: Path, cwd: Path, timeout_s: float
) -> tuple[int | None, str]:
    """Run one child process of the cell, recording its wall time; ``(returncode or None
    on timeout, stderr)``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SEGMENTS_FILE
    segments = _segments(run_dir)
    segment: dict[str, Any] = {"started": time.time(), "wall_s": None}
    path.write_text(json.dumps([*segments, segment]))
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, cwd=cwd
        )
        returncode, stderr = completed.returncode, completed.stderr
    except subprocess.TimeoutExpired as error:
        returncode = None
        stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else str(error.stderr)
    segment["wall_s"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps([*segments, segment]))
    return returncode, stderr


def run_cell(
    env: str, algo: str, seed: int, runs_dir: Path, timeout_s: float, *, fresh: bool = False
) -> dict[str, Any]:
    """Train one (env, algo, seed) in a fresh process; the result line for the file.

    A cell cut short earlier (the harness was killed: a MuJoCo A2C cell takes about an
    hour on two cores) continues from its latest checkpoint with ``vecpg train --resume``;
    one without a checkpoint, or any with ``fresh`` (``--rerun`` of a finished cell),
    starts over. A failed resume is reported like a failed run and its run dir kept (it
    may be another harness's running cell, or worth a look). The cell's wall time is the
    sum of its processes' (``<run_dir>/quality_segments.json``).
    """
    runs_dir = runs_dir.resolve()  # the child runs inside it: a relative run dir would nest
    run_dir = runs_dir / f"{env}__{algo}__{seed}"
    # The versions of the code that runs, read before a checkout can move on.
    environment = versions(VERSIONED_PACKAGES)
    command = train_command(env, algo, seed, run_dir)
    checkpoints = [] if fresh else list_checkpoints(run_dir)
    resumed_from = checkpoints[-1] if checkpoints else None
    if resumed_from is not None:
        returncode, stderr = _run_segment(resume_command(run_dir), run_dir, runs_dir, timeout_s)
    else:  # nothing to continue from: start over
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        returncode, stderr = _run_segment(command, run_dir, runs_dir, timeout_s)
    segments = _segments(run_dir)
    wall_s = sum(segment["wall_s"] for segment in segments)
    row = last_row(run_dir / "metrics.csv")
    final = float(row["episode_return_mean"]) if row else math.nan
    evaluated = deterministic_return(run_dir, timeout_s) if returncode == 0 else math.nan
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").exists():
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return {
        "kind": "cell",
        "env": env,
        "algo": algo,
        "seed": seed,
        "final_return": final,
        "eval_return": evaluated,
        "global_step": int(row["global_step"]) if row else 0,
        "total_steps": config.get("total_steps"),
        "preset": config.get("preset"),
        "wall_s": round(wall_s, 1),
        "segments": len(segments),
        "resumed_from_step": resumed_from,
        "returncode": returncode,
        "error": None if returncode == 0 else stderr.strip().splitlines()[-1:] or ["timeout"],
        "command": " ".join(command),
        "run_dir": str(run_dir),
        "versions": environment,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def random_score(env: str, episodes: int, seed: int = 0) -> dict[str, Any]:
    """Mean undiscounted return of uniform random actions over ``episodes`` episodes."""
    import gymnasium as gym

    environment = gym.make(env)
    environment.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        environment.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = environment.step(
                environment.action_space.sample()
            )
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    environment.close()
    return {
        "kind": "random",
        "env": env,
        "mean": statistics.fmean(returns),
        "std": statistics.pstdev(returns),
        "episodes": episodes,
    }


def latest_cells(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Each cell's latest line by ``(env, algo, seed)``: a rerun or an added deterministic
    score is appended as a new line and replaces the earlier one."""
    return {(r["env"], r["algo"], r["seed"]): r for r in results if r["kind"] == "cell"}


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [value for value in values if math.isfinite(value)]
    mean = statistics.fmean(finite) if finite else math.nan
    return mean, statistics.pstdev(finite) if len(finite) > 1 else math.nan


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (env, algo) with measured cells: the training and deterministic scores
    (mean/std over seeds), published, random and the normalized score, which compares the
    published figure with vecpg's score of the same kind (``Published.metric``)."""
    randoms = {r["env"]: r["mean"] for r in results if r["kind"] == "random"}
    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for (env, algo, seed), result in latest_cells(results).items():
        cells.setdefault((env, algo), {})[seed] = result
    rows = []
    for (env, algo), by_seed in sorted(cells.items(), key=lambda item: ENVS.index(item[0][0])):
        done = sorted(
            (cell for cell in by_seed.values() if cell["returncode"] == 0),
            key=lambda cell: cell["seed"],
        )
        finals = [cell["final_return"] for cell in done]
        evals = [cell.get("eval_return", math.nan) for cell in done]
        mean, std = _mean_std(finals)
        eval_mean, eval_std = _mean_std(evals)
        published = PUBLISHED.get((env, algo))
        random = randoms.get(env)
        normalized = math.nan
        if published is not None and random is not None:
            score = eval_mean if published.metric == "deterministic" else mean
            normalized = (score - random) / (published.mean - random)
        rows.append(
            {
                "env": env,
                "algo": algo,
                "seeds": [cell["seed"] for cell in done],
                "finals": [round(value, 1) for value in finals],
                "evals": [round(value, 1) for value in evals],
                "mean": mean,
                "std": std,
                "eval_mean": eval_mean,
                "eval_std": eval_std,
                "steps": sorted({cell["global_step"] for cell in done}),
                "wall_s": [cell["wall_s"] for cell in done],
                "published": published,
                "random": random,
                "normalized": normalized,
                "failed": [cell["seed"] for cell in by_seed.values() if cell["returncode"] != 0],
            }
        )
    return rows


def _shown(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| env | algo | steps | training return, mean ± std (seeds) | per seed "
        "| deterministic eval, mean ± std | per seed | published (budget, kind) "
        "| random | normalized | wall s per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        published = row["published"]
        shown = (
            f"{published.mean:g} ± {published.std:g} ({published.budget:,}, {published.metric})"
            if published
            else "-"
        )
        lines.append(
            f"| {row['env']} | {row['algo']} | {', '.join(f'{s:,}' for s in row['steps'])} "
            f"| {_shown(row['mean'])} ± {_shown(row['std'])} ({len(row['seeds'])}) "
            f"| {' '.join(_shown(f) for f in row['finals'])} "
            f"| {_shown(row['eval_mean'])} ± {_shown(row['eval_std'])} "
            f"| {' '.join(_shown(e) for e in row['evals'])} "
            f"| {shown} | {_shown(row['random'])} | {_shown(row['normalized'], '.2f')} "
            f"| {' '.join(f'{w:.0f}' for w in row['wall_s'])} |"
        )
    return "\n".join(lines)


def plot_commands(
    results: list[dict[str, Any]], out_dir: Path, envs: Sequence[str], algos: Sequence[str]
) -> list[list[str]]:
    """One ``vecpg plot`` command per (env, algo) of ``envs`` x ``algos`` with finished
    cells: their seeds' curves overlaid against env steps, to ``out_dir/ENV__ALGO.png``.

    A cell whose run dir no longer holds a metrics.csv is left out of the plot (the table
    still counts it).
    """
    latest = latest_cells(results)
    run_dirs: dict[tuple[str, str], list[str]] = {}
    for (env, algo, _seed), cell in sorted(latest.items(), key=lambda item: item[0][2]):
        run_dir = Path(cell.get("run_dir") or "")
        if cell["returncode"] == 0 and (run_dir / "metrics.csv").is_file():
            run_dirs.setdefault((env, algo), []).append(str(run_dir))
    commands = []
    for env in envs:
        for algo in algos:
            if (env, algo) in run_dirs:
                out = out_dir / f"{env}__{algo}.png"
                title = f"{env} {algo} with its preset (training return)"
                plot = [sys.executable, "-m", "vecpg", "plot", *run_dirs[env, algo]]
                commands.append([*plot, "--x", "steps", "--title", title, "--out", str(out)])
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--random-episodes", type=int, default=20)
    parser.add_argument(
        "--results",
        type=Path,
        default=HERE / "results" / "quality.jsonl",
        help="JSON lines, one per finished cell (appended; read to resume)",
    )
    parser.add_argument("--runs-dir", type=Path, default=HERE / "results" / "quality_runs")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run")
    parser.add_argument("--rerun", action="store_true", help="run finished cells again")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument(
        "--plots", type=Path, metavar="DIR", help="also write each row's learning curves here"
    )
    return parser


def evaluate_older_cells(args: argparse.Namespace) -> None:
    """Give finished cells of the selected envs/algos written without a deterministic
    evaluation one (from their run dir's checkpoint), as an updated line."""
    for (env, algo, _seed), cell in latest_cells(read_results(args.results)).items():
        run_dir = Path(cell.get("run_dir", ""))
        if env not in args.envs or algo not in args.algos or "eval_return" in cell:
            continue
        if cell["returncode"] == 0 and run_dir.is_dir():
            evaluated = deterministic_return(run_dir, args.timeout)
            append_result(args.results, {**cell, "eval_return": evaluated})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.report:
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        results = read_results(args.results)
        scored = {r["env"] for r in results if r["kind"] == "random"}
        for env in args.envs:
            if env not in scored:
                append_result(args.results, random_score(env, args.random_episodes))
        # seed-major order: the first seed of every cell before the second of any
        for seed in args.seeds:
            for env in args.envs:
                for algo in args.algos:
                    done = any(
                        r["kind"] == "cell"
                        and (r["env"], r["algo"], r["seed"]) == (env, algo, seed)
                        and r["returncode"] == 0
                        for r in read_results(args.results)
                    )
                    if done and not args.rerun:
                        continue
                    # a rerun of a finished cell trains anew; its checkpoint is at the end
                    result = run_cell(env, algo, seed, args.runs_dir, args.timeout, fresh=done)
                    append_result(args.results, result)
                    print(
                        f"{env} {algo} seed {seed}: final {result['final_return']:.1f}, "
                        f"deterministic {result['eval_return']:.1f}, "
                        f"at {result['global_step']:,} steps in {result['wall_s']:.0f} s"
                        + (f" (failed: {result['error']})" if result["returncode"] != 0 else ""),
                        flush=True,
                    )
        evaluate_older_cells(args)
    print(markdown(summarize(read_results(args.results))))
    if args.plots is None:
        return 0
    args.plots.mkdir(parents=True, exist_ok=True)
    failed = 0
    for command in plot_commands(read_results(args.results), args.plots, args.envs, args.algos):
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            failed += 1
            reason = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"plot failed: {reason}", file=sys.stderr)
        else:
            print(completed.stdout.strip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
