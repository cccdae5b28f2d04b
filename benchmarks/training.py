"""Training benchmarks: time to solve CartPole and training throughput, vecpg against SB3.

    python benchmarks/training.py --quick          # smoke run: 1 seed, target 100, 5k steps
    python benchmarks/training.py                  # time to solve (5 seeds) + throughput

Every training run is a fresh child process (``vecpg train ...`` or ``python -c <SB3
script>``), so Python start-up, imports and env construction count for both tools. Times
are seconds since the child process started, read from its ``/proc/<pid>/stat`` start
time the way :mod:`vecpg.run.metrics` does (the start time is the moment of the parent's
fork, so this is "from Popen"): vecpg's ``time_s`` column of metrics.csv, and the same
clock in the SB3 script. Runs of all tools are interleaved (seed 1 of every tool, then
seed 2, ...) so a burst of load from elsewhere hits all of them. torch runs one intra-op
thread in both (``vecpg train --torch-threads 1``, the default; ``torch.set_num_threads(1)``
in the SB3 script). See benchmarks/TRAINING.md for what each column means.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vecpg.bench.provenance import versions
from vecpg.vector.worker_defaults import usable_cores

# rl-baselines3-zoo CartPole-v1 entries, copied verbatim. Both files were read at two
# commits (the CartPole-v1 entries are identical at both).
RL_ZOO_SOURCE = {
    "ppo": "DLR-RM/rl-baselines3-zoo hyperparams/ppo.yml @ 208b6fdf3a9aa24de44b2e068c6e5f6a07d97fcc"
    " (same entry @ 00128b5d46d497b772f3bd891ae9f520919e8971)",
    "a2c": "DLR-RM/rl-baselines3-zoo hyperparams/a2c.yml @ c6c209e7d487635f0b835fb916ec4468142b28ff"
    " (same entry @ 02846e4d8eb7130434c62ad63dd31005a1e545ef)",
}
RL_ZOO_CARTPOLE: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_envs": 8,
        "n_timesteps": 100_000,
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": "lin_0.001",
        "clip_range": "lin_0.2",
    },
    "a2c": {"n_envs": 8, "n_timesteps": 500_000, "policy": "MlpPolicy", "ent_coef": 0.0},
}
# Stable-Baselines3 2.x constructor defaults for what the zoo entries leave out (MlpPolicy:
# separate 64-64 tanh actor and critic, orthogonal init; A2C: RMSprop alpha 0.99).
# tests/test_training_benchmark.py checks them against the installed SB3's signatures.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "learning_rate": 3e-4,
        "n_steps": 2048,
        "batch_size": 64,
        "n_epochs": 10,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "clip_range_vf": None,
        "normalize_advantage": True,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "target_kl": None,
    },
    "a2c": {
        "learning_rate": 7e-4,
        "n_steps": 5,
        "gamma": 0.99,
        "gae_lambda": 1.0,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "rms_prop_eps": 1e-5,
        "use_rms_prop": True,
        "normalize_advantage": False,
    },
}
# tool name -> (framework, algorithm, hyperparameters: "defaults" of vecpg or rl-zoo's)
TOOLS = {
    "vecpg-ppo": ("vecpg", "ppo", "defaults"),
    "vecpg-a2c": ("vecpg", "a2c", "defaults"),
    "sb3-ppo": ("sb3", "ppo", "zoo"),
    "sb3-a2c": ("sb3", "a2c", "zoo"),
    "vecpg-ppo-zoo": ("vecpg", "ppo", "zoo"),
    "vecpg-a2c-zoo": ("vecpg", "a2c", "zoo"),
}
DEFAULT_SOLVE_TOOLS = ["vecpg-ppo", "vecpg-a2c", "sb3-ppo", "sb3-a2c"]
RESULT_PREFIX = "VECPG_TRAINING_BENCHMARK "
TARGET_RATIO = {"solve_time": 0.5, "throughput": 2.0}


def zoo_hyperparameters(algo: str) -> dict[str, Any]:
    """The rl-zoo CartPole-v1 entry with SB3's defaults filled in for what it leaves out."""
    return {**SB3_DEFAULTS[algo], **RL_ZOO_CARTPOLE[algo]}


def _constant(value: Any) -> float:
    """``lin_0.001`` -> 0.001 (a linear schedule's initial value); numbers unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        return float(value[4:])
    return float(value)


def zoo_to_vecpg_args(algo: str, total_steps: int | None = None) -> tuple[list[str], list[str]]:
    """``vecpg train`` options equivalent to SB3 with the rl-zoo CartPole-v1 hyperparameters.

    Every option is spelled out, so vecpg's own defaults play no part. Returns the options
    and notes on what cannot be mapped exactly.

    Raises:
        ValueError: the zoo batch size does not divide the rollout (SB3 would run a
            smaller last minibatch; vecpg needs equal minibatches).
    """
    zoo = zoo_hyperparameters(algo)
    total = int(total_steps if total_steps is not None else zoo["n_timesteps"])
    notes = [
        # vecpg's losses are 0.5 * MSE (CleanRL); SB3's are MSE without the 0.5.
        f"vf_coef {zoo['vf_coef']} -> --vf-coef {2 * zoo['vf_coef']:g}: vecpg's value "
        "loss is 0.5*MSE, SB3's is MSE"
    ]
    args = [
        *("--algo", algo, "--num-envs", str(zoo["n_envs"]), "--num-steps", str(zoo["n_steps"])),
        *("--total-steps", str(total), "--gamma", f"{zoo['gamma']:g}"),
        *("--advantage", "gae", "--gae-lambda", f"{zoo['gae_lambda']:g}"),
        *("--learning-rate", f"{_constant(zoo['learning_rate']):g}"),
        "--anneal-lr" if str(zoo["learning_rate"]).startswith("lin_") else "--no-anneal-lr",
        *("--ent-coef", f"{zoo['ent_coef']:g}", "--vf-coef", f"{2 * zoo['vf_coef']:g}"),
        *("--max-grad-norm", f"{zoo['max_grad_norm']:g}"),
        "--normalize-advantages" if zoo["normalize_advantage"] else "--no-normalize-advantages",
        *("--hidden-sizes", "64", "64", "--activation", "tanh"),
        *("--no-shared-trunk", "--ortho-init"),
        *("--no-normalize-observations", "--no-normalize-rewards"),
    ]
    if algo == "ppo":
        rollout = zoo["n_envs"] * zoo["n_steps"]
        if rollout % zoo["batch_size"]:
            raise ValueError(f"batch_size {zoo['batch_size']} does not divide {rollout}")
        if zoo["clip_range_vf"] is not None or zoo["target_kl"] is not None:
            raise ValueError("clip_range_vf/target_kl mapping is not implemented")
        args += [
            *("--num-epochs", str(zoo["n_epochs"])),
            *("--num-minibatches", str(rollout // zoo["batch_size"])),
            *("--clip-coef", f"{_constant(zoo['clip_range']):g}", "--no-clip-value-loss"),
            *("--optimizer", "adam", "--optimizer-eps", "1e-05"),
        ]
        if str(zoo["clip_range"]).startswith("lin_"):
            notes.append(
                f"clip_range {zoo['clip_range']} -> constant --clip-coef "
                f"{_constant(zoo['clip_range']):g}: vecpg does not anneal the clip range"
            )
    else:
        optimizer = "rmsprop" if zoo["use_rms_prop"] else "adam"
        eps = f"{zoo['rms_prop_eps']:g}" if zoo["use_rms_prop"] else "1e-05"
        args += ["--optimizer", optimizer, "--optimizer-eps", eps]
    if str(zoo["learning_rate"]).startswith("lin_"):
        notes.append(f"learning_rate {zoo['learning_rate']}: linear to 0 over {total:,} steps")
    return args, notes


# The SB3 side, run as `python -c SB3_CHILD '<json spec>'`. Its clock is the one of
# vecpg.run.metrics (seconds since the process started), copied so SB3 does not import vecpg.
SB3_CHILD = r"""
import json, os, sys, time
def _since_start():
    with open("/proc/self/stat") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as stream:
        uptime = float(stream.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
_ELAPSED, _PERF = _since_start(), time.perf_counter()
def now():
    return _ELAPSED + time.perf_counter() - _PERF
spec = json.loads(sys.argv[1])
import collections
import torch
torch.set_num_threads(1)
import stable_baselines3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
def schedule(value):
    if isinstance(value, str) and value.startswith("lin_"):
        initial = float(value[4:])
        return lambda progress_remaining: progress_remaining * initial
    return value
class Watch(BaseCallback):
    # Checked at every vector step: SB3's own ep_info_buffer is updated after on_step.
    def __init__(self):
        super().__init__()
        self.returns = collections.deque(maxlen=20)
        self.episodes, self.solved = 0, None
    def _on_step(self):
        for info in self.locals["infos"]:
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
                self.episodes += 1
        target = spec["target"]
        if target is not None and self.returns and sum(self.returns) / len(self.returns) >= target:
            self.solved = {"time_s": now(), "global_step": int(self.num_timesteps)}
            return False
        return True
hyperparameters = {k: v for k, v in spec["hyperparameters"].items() if k not in ("n_envs", "n_timesteps", "policy")}
for key in ("learning_rate", "clip_range"):
    if key in hyperparameters:
        hyperparameters[key] = schedule(hyperparameters[key])
algorithm = {"ppo": stable_baselines3.PPO, "a2c": stable_baselines3.A2C}[spec["algo"]]
env = make_vec_env(spec["env"], n_envs=spec["hyperparameters"]["n_envs"], seed=spec["seed"])
model = algorithm(spec["hyperparameters"]["policy"], env, seed=spec["seed"], verbose=0, **hyperparameters)
watch = Watch()
learn_start = now()
model.learn(total_timesteps=int(spec["total_steps"]), callback=watch)
end = now()
mean = sum(watch.returns) / len(watch.returns) if watch.returns else float("nan")
result = {"solved": watch.solved is not None, "solve": watch.solved, "learn_start_s": learn_start,
          "end_s": end, "global_step": int(model.num_timesteps), "episode_return_mean": mean,
          "episodes": watch.episodes, "torch_threads": torch.get_num_threads()}
print(RESULT_PREFIX + json.dumps(result), flush=True)
""".replace("RESULT_PREFIX", repr(RESULT_PREFIX))


def vecpg_executable() -> list[str]:
    """The ``vecpg`` console script of this interpreter's environment (``-m vecpg`` if none)."""
    script = Path(sys.executable).with_name("vecpg")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vecpg"]


def vecpg_command(
    algo: str,
    hyperparameters: str,
    *,
    env: str,
    seed: int,
    run_dir: Path,
    target: float | None = None,
    total_steps: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``vecpg train`` with vecpg's defaults (``hyperparameters="defaults"``) or rl-zoo's."""
    command = [*vecpg_executable(), "train", "--env", env, "--seed", str(seed)]
    if hyperparameters == "zoo":
        command += zoo_to_vecpg_args(algo, total_steps)[0]
    else:
        command += ["--algo", algo]
        if total_steps is not None:
            command += ["--total-steps", str(total_steps)]
    if target is not None:
        command += ["--stop-at-return", f"{target:g}"]
    return command + ["--torch-threads", "1", "--run-dir", str(run_dir), "--quiet", *extra]


def sb3_command(
    algo: str, *, env: str, seed: int, target: float | None = None, total_steps: int | None = None
) -> list[str]:
    """A fresh Python process training SB3 with the rl-zoo hyperparameters."""
    hyperparameters = zoo_hyperparameters(algo)
    spec = {
        "algo": algo,
        "env": env,
        "seed": seed,
        "target": target,
        # The zoo's n_timesteps is also what its lin_ schedules run over.
        "total_steps": total_steps if total_steps is not None else hyperparameters["n_timesteps"],
        "hyperparameters": hyperparameters,
    }
    return [sys.executable, "-c", SB3_CHILD, json.dumps(spec)]


def run_child(command: list[str], timeout_s: float, cwd: Path | None = None) -> dict[str, Any]:
    """Runs a command in its own process group; kills the whole group on timeout.

    ``cwd``: where files a library drops in the working dir go (MuJoCo's MUJOCO_LOG.TXT).
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=cwd,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # vecpg's env workers are in the group too
        stdout, stderr = process.communicate()
        timed_out = True
    return {
        "returncode": process.returncode,
        "timed_out": timed_out,
        "stdout": stdout,
        "stderr": stderr,
        "exit_s": time.perf_counter() - started,
    }


def parse_result_line(stdout: str) -> dict[str, Any] | None:
    """The JSON result the SB3 script prints after ``RESULT_PREFIX`` (last one wins)."""
    found = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            found = json.loads(line[len(RESULT_PREFIX) :])
    return found


_VECPG_SUMMARY = re.compile(
    r"^vecpg: (?P<algo>\S+) on (?P<env>\S+): (?P<global_step>[\d,]+) steps.*? in "
    r"(?P<time_s>[\d.]+) s \((?P<sps>[\d,.]+) steps/s\), mean return "
    r"(?P<episode_return_mean>n/a \(no episode finished\)|-?[\d.]+) over the last 20 episodes"
    r"(?P<reached>, reached \S+)?; run dir (?P<run_dir>.+)$"
)


def parse_vecpg_summary(stdout: str) -> dict[str, Any] | None:
    """The final summary line of ``vecpg train`` as numbers (None if there is none)."""
    for line in reversed(stdout.splitlines()):
        match = _VECPG_SUMMARY.match(line.strip())
        if match:
            ret = match["episode_return_mean"]
            return {
                "algo": match["algo"],
                "env": match["env"],
                "global_step": int(match["global_step"].replace(",", "")),
                "time_s": float(match["time_s"]),
                "sps": float(match["sps"].replace(",", "")),
                "episode_return_mean": float("nan") if ret.startswith("n/a") else float(ret),
                "reached": match["reached"] is not None,
                "run_dir": match["run_dir"],
            }
    return None


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv rows with the columns this benchmark uses, as floats."""
    columns = ("global_step", "time_s", "sps", "episode_return_mean")
    with open(path, newline="") as stream:
        return [
            {name: float(row[name] or "nan") for name in columns} for row in csv.DictReader(stream)
        ]


def first_reaching(rows: Sequence[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first row whose mean return over the last 20 episodes is >= target."""
    return next((row for row in rows if row["episode_return_mean"] >= target), None)


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median where a missing value (unsolved run) counts as +infinity; None if that wins."""
    if not values:
        return None
    median = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(median) else median


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _failure(child: dict[str, Any]) -> str | None:
    if child["timed_out"]:
        return "timed out"
    if child["returncode"] != 0:
        tail = (child["stderr"] or child["stdout"]).strip().splitlines()[-3:]
        return f"exit code {child['returncode']}: " + " | ".join(tail)
    return None


def run_one(
    tool: str,
    *,
    env: str,
    seed: int,
    target: float | None,
    total_steps: int | None,
    runs_root: Path,
    timeout_s: float,
    vecpg_extra: Sequence[str] = (),
) -> dict[str, Any]:
    """One training run of ``tool`` in a child process, as a result dict (see TRAINING.md)."""
    framework, algo, hyperparameters = TOOLS[tool]
    result: dict[str, Any] = {"tool": tool, "seed": seed, "env": env}
    if framework == "vecpg":
        run_dir = runs_root / f"{tool}__{env}__{seed}"
        command = vecpg_command(
            algo,
            hyperparameters,
            env=env,
            seed=seed,
            run_dir=run_dir,
            target=target,
            total_steps=total_steps,
            extra=vecpg_extra,
        )
    else:
        command = sb3_command(algo, env=env, seed=seed, target=target, total_steps=total_steps)
    child = run_child(command, timeout_s, cwd=runs_root)
    result["command"] = shlex.join(
        command if framework == "vecpg" else command[:2] + ["<SB3 script>", command[3]]
    )
    result["exit_s"] = child["exit_s"]
    result["error"] = _failure(child)
    if result["error"]:
        return result
    if framework == "vecpg":
        rows = read_metrics(run_dir / "metrics.csv")
        if not rows:
            result["error"] = "metrics.csv has no rows"
            return result
        solve = first_reaching(rows, target) if target is not None else None
        last = rows[-1]
        summary = parse_vecpg_summary(child["stdout"])
        if summary is None or (target is not None and summary["reached"] != (solve is not None)):
            # The summary line is vecpg's own verdict; metrics.csv must tell the same story.
            result["error"] = f"summary line {summary} disagrees with metrics.csv"
            return result
        result.update(
            solved=solve is not None,
            solve_time_s=solve["time_s"] if solve else None,
            solve_step=int(solve["global_step"]) if solve else None,
            global_step=int(last["global_step"]),
            end_s=last["time_s"],
            loop_steps_per_s=last["sps"],  # steps since train() began / time since then
            episode_return_mean=last["episode_return_mean"],
        )
        # metrics.csv has no row at train()'s start: back it out of the last row's rate.
        if last["sps"] > 0:
            result["start_s"] = last["time_s"] - last["global_step"] / last["sps"]
    else:
        parsed = parse_result_line(child["stdout"])
        if parsed is None:
            result["error"] = "no result line in the SB3 child's output"
            return result
        solve = parsed["solve"]
        loop_s = parsed["end_s"] - parsed["learn_start_s"]
        result.update(
            solved=bool(parsed["solved"]),
            solve_time_s=solve["time_s"] if solve else None,
            solve_step=solve["global_step"] if solve else None,
            global_step=parsed["global_step"],
            end_s=parsed["end_s"],
            loop_steps_per_s=parsed["global_step"] / loop_s if loop_s > 0 else None,
            episode_return_mean=parsed["episode_return_mean"],
            torch_threads=parsed["torch_threads"],
            start_s=parsed["learn_start_s"],
        )
    result["process_steps_per_s"] = result["global_step"] / result["end_s"]
    return result


def summarize_solve(runs: list[dict[str, Any]], tools: Sequence[str]) -> dict[str, Any]:
    """Medians per tool (an unsolved or failed run counts as infinitely slow) and vecpg/SB3."""
    summary: dict[str, Any] = {}
    for tool in tools:
        mine = [run for run in runs if run["tool"] == tool]
        ok = [run for run in mine if not run.get("error")]
        times = [run.get("solve_time_s") if not run.get("error") else None for run in mine]
        steps = [run.get("solve_step") if not run.get("error") else None for run in mine]
        rates = [run["solve_step"] / run["solve_time_s"] for run in ok if run.get("solved")]
        # Until the process has exited: what a user waits for (interpreter teardown included).
        exits = [run.get("exit_s") if run.get("solved") else None for run in ok]
        summary[tool] = {
            "runs": len(mine),
            "solved": sum(1 for run in ok if run.get("solved")),
            "median_time_s": median_or_none(times),
            "median_steps": median_or_none(steps),
            "median_steps_per_s_to_solve": statistics.median(rates) if rates else None,
            "median_loop_steps_per_s": median_or_none([run.get("loop_steps_per_s") for run in ok]),
            "median_start_s": median_or_none([run.get("start_s") for run in ok]),
            "median_exit_s": median_or_none(exits + [None] * (len(mine) - len(ok))),
            "times_s": times,
        }
    for tool in tools:
        framework, algo, _ = TOOLS[tool]
        peer = f"sb3-{algo}"
        if framework == "vecpg" and peer in summary:
            summary[tool]["time_ratio_vs_sb3"] = ratio(
                summary[tool]["median_time_s"], summary[peer]["median_time_s"]
            )
            summary[tool]["steps_ratio_vs_sb3"] = ratio(
                summary[tool]["median_steps"], summary[peer]["median_steps"]
            )
            summary[tool]["exit_ratio_vs_sb3"] = ratio(
                summary[tool]["median_exit_s"], summary[peer]["median_exit_s"]
            )
    return summary


def summarize_throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for tool in ("vecpg-ppo-zoo", "sb3-ppo"):
        ok = [run for run in runs if run["tool"] == tool and not run.get("error")]
        summary[tool] = {
            "runs": len([run for run in runs if run["tool"] == tool]),
            "ok": len(ok),
            "median_loop_steps_per_s": median_or_none([r["loop_steps_per_s"] for r in ok]),
            "median_process_steps_per_s": median_or_none([r["process_steps_per_s"] for r in ok]),
        }
    for kind in ("loop", "process"):
        key = f"median_{kind}_steps_per_s"
        summary[f"{kind}_ratio_vecpg_vs_sb3"] = ratio(
            summary["vecpg-ppo-zoo"][key], summary["sb3-ppo"][key]
        )
    return summary


def target_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/FAIL of the targets, each from ratios measured in this run."""
    checks = []
    solve = report.get("solve", {}).get("summary", {})
    for tool in ("vecpg-ppo", "vecpg-a2c"):
        if tool in solve and "time_ratio_vs_sb3" in solve[tool]:
            value = solve[tool]["time_ratio_vs_sb3"]
            checks.append(
                {
                    "target": f"{tool} time to solve <= {TARGET_RATIO['solve_time']} x sb3-{tool[6:]}",
                    "value": value,
                    "met": value is not None and value <= TARGET_RATIO["solve_time"],
                }
            )
    throughput = report.get("throughput", {}).get("summary")
    if throughput:
        value = throughput["loop_ratio_vecpg_vs_sb3"]
        checks.append(
            {
                "target": f"vecpg PPO (rl-zoo hyperparameters) steps/s >= {TARGET_RATIO['throughput']} x SB3 PPO",
                "value": value,
                "met": value is not None and value >= TARGET_RATIO["throughput"],
            }
        )
    return checks


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


def _progress(run: dict[str, Any]) -> None:
    if run.get("error"):
        state = f"ERROR {run['error']}"
    elif run.get("solve_time_s") is not None:
        state = f"solved in {run['solve_time_s']:.2f} s, {run['solve_step']:,} steps"
    else:
        state = f"{run['global_step']:,} steps, {_fmt(run.get('loop_steps_per_s'), ',.0f')} steps/s"
        state += f", mean return {_fmt(run['episode_return_mean'])}"
    print(f"  {run['tool']:<14} seed {run['seed']:<3} {run['env']:<15} {state}", flush=True)


def print_report(report: dict[str, Any]) -> None:
    if "solve" in report:
        solve = report["solve"]
        print(
            f"\ntime to solve {solve['env']} (mean return of the last 20 episodes >= "
            f"{solve['target']:g}), whole process, median of seeds {solve['seeds']}"
        )
        print(
            f"{'tool':<14} {'solved':>6} {'time s':>7} {'start s':>7} {'steps':>8} {'steps/s':>8} "
            f"{'loop st/s':>9} {'x SB3 time':>10} {'x SB3 steps':>11} {'exit s':>7} "
            f"{'x SB3 exit':>10}  per-seed s"
        )
        for tool, row in solve["summary"].items():
            seeds = " ".join(_fmt(t, ".2f") for t in row["times_s"])
            print(
                f"{tool:<14} {row['solved']:>3}/{row['runs']:<2} {_fmt(row['median_time_s'], '.2f'):>7} "
                f"{_fmt(row.get('median_start_s'), '.2f'):>7} "
                f"{_fmt(row['median_steps'], ',.0f'):>8} {_fmt(row['median_steps_per_s_to_solve'], ',.0f'):>8} "
                f"{_fmt(row['median_loop_steps_per_s'], ',.0f'):>9} "
                f"{_fmt(row.get('time_ratio_vs_sb3'), '.2f'):>10} "
                f"{_fmt(row.get('steps_ratio_vs_sb3'), '.2f'):>11} "
                f"{_fmt(row.get('median_exit_s'), '.2f'):>7} "
                f"{_fmt(row.get('exit_ratio_vs_sb3'), '.2f'):>10}  {seeds}"
            )
    if "throughput" in report:
        throughput = report["throughput"]
        summary = throughput["summary"]
        print(
            f"\ntraining throughput, PPO with the rl-zoo CartPole-v1 hyperparameters, "
            f"{throughput['total_steps']:,} steps, median of {throughput['repeats']} runs"
        )
        print(f"{'tool':<14} {'ok':>4} {'loop steps/s':>12} {'process steps/s':>15}")
        for tool in ("vecpg-ppo-zoo", "sb3-ppo"):
            row = summary[tool]
            print(
                f"{tool:<14} {row['ok']:>2}/{row['runs']:<1} "
                f"{_fmt(row['median_loop_steps_per_s'], ',.0f'):>12} "
                f"{_fmt(row['median_process_steps_per_s'], ',.0f'):>15}"
            )
        print(
            f"{'vecpg / sb3':<14} {'':>4} {_fmt(summary['loop_ratio_vecpg_vs_sb3'], '.2f'):>12} "
            f"{_fmt(summary['process_ratio_vecpg_vs_sb3'], '.2f'):>15}"
        )
    for check in report.get("targets", []):
        verdict = "PASS" if check["met"] else "FAIL"
        print(f"{verdict}: {check['target']}: {_fmt(check['value'], '.2f')}")
    notes = report.get("rl_zoo", {}).get("mapping_notes", {}).get("ppo", [])
    if "throughput" in report and notes:
        print("rl-zoo -> vecpg mapping: " + "; ".join(notes))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: seed 1, target 100, 5k throughput steps")
    add("--seeds", type=int, nargs="+", help="seeds (default 1-5)")
    add("--env", default="CartPole-v1", help="env of time to solve and throughput")
    add("--target", type=float, help="mean return of the last 20 episodes (default 475)")
    add("--tools", nargs="+", choices=list(TOOLS), default=DEFAULT_SOLVE_TOOLS, help="see TOOLS")
    add("--skip-solve", action="store_true", help="no time-to-solve runs")
    add("--skip-throughput", action="store_true", help="no throughput runs")
    add("--throughput-steps", type=int, help="env steps per throughput run (default 50000)")
    add("--throughput-repeats", type=int, help="throughput runs per tool (default 3)")
    add("--vecpg-args", default="", help="extra vecpg train options, e.g. '--no-tensorboard'")
    add("--timeout", type=float, help="seconds per child run (default 600)")
    add("--runs-dir", help="keep the vecpg run dirs here (default: a deleted temporary dir)")
    add("--out", help="JSON (default benchmarks/results/training.json)")
    return parser


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the options left at None from --quick or the full defaults."""
    quick = args.quick
    defaults = {
        "seeds": [1] if quick else [1, 2, 3, 4, 5],
        "target": 100.0 if quick else 475.0,
        "throughput_steps": 5_000 if quick else 50_000,
        "throughput_repeats": 1 if quick else 3,
        "timeout": 600.0,
        "out": "benchmarks/results/training.json",
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def run_benchmark(args: argparse.Namespace, runs_root: Path) -> dict[str, Any]:
    extra = shlex.split(args.vecpg_args)
    common = {"runs_root": runs_root, "timeout_s": args.timeout, "vecpg_extra": extra}
    report: dict[str, Any] = {
        "benchmark": "training",
        "settings": dict(vars(args)),
        "machine": {
            "usable_cores": usable_cores(),
            "load_average_at_start": os.getloadavg(),
            "versions": versions(
                ["vecpg", "torch", "gymnasium", "stable_baselines3", "numpy", "mujoco"]
            ),
            "torch_threads": 1,
            "clock": "seconds since the child process started (/proc/<pid>/stat start time)",
        },
        "rl_zoo": {
            "source": RL_ZOO_SOURCE,
            "cartpole_v1": RL_ZOO_CARTPOLE,
            "with_sb3_defaults": {algo: zoo_hyperparameters(algo) for algo in ("ppo", "a2c")},
            "vecpg_args": {algo: zoo_to_vecpg_args(algo)[0] for algo in ("ppo", "a2c")},
            "mapping_notes": {algo: zoo_to_vecpg_args(algo)[1] for algo in ("ppo", "a2c")},
        },
    }
    if not args.skip_solve:
        runs = []
        for seed in args.seeds:  # interleaved: seed 1 of every tool, then seed 2, ...
            for tool in args.tools:
                run = run_one(
                    tool,
                    env=args.env,
                    seed=seed,
                    target=args.target,
                    total_steps=None,
                    **common,
                )
                _progress(run)
                runs.append(run)
        report["solve"] = {
            "env": args.env,
            "target": args.target,
            "seeds": args.seeds,
            "runs": runs,
            "summary": summarize_solve(runs, args.tools),
        }
    if not args.skip_throughput:
        runs = []
        for repeat in range(args.throughput_repeats):
            for tool in ("vecpg-ppo-zoo", "sb3-ppo"):
                run = run_one(
                    tool,
                    env=args.env,
                    seed=repeat + 1,
                    target=None,
                    total_steps=args.throughput_steps,
                    **common,
                )
                _progress(run)
                runs.append(run)
        report["throughput"] = {
            "env": args.env,
            "total_steps": args.throughput_steps,
            "repeats": args.throughput_repeats,
            "runs": runs,
            "summary": summarize_throughput(runs),
        }
    report["targets"] = target_checks(report)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    return report


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_defaults(build_parser().parse_args(argv))
    print(f"usable cores: {usable_cores()}, load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="vecpg-training-bench-") as scratch:
        runs_root = Path(args.runs_dir) if args.runs_dir else Path(scratch)
        runs_root.mkdir(parents=True, exist_ok=True)
        report = run_benchmark(args, runs_root)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    print_report(report)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
