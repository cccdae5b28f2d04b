"""SB3's PPO on CartPole-v1 through vecpg.sb3.SubprocVecEnv and through SB3's SubprocVecEnv.

    python benchmarks/sb3_ppo.py                       # 100k steps, 8 envs, seeds 0 1
    python benchmarks/sb3_ppo.py --num-envs 32 --seeds 0 1 2 --out sb3_ppo.json

Each seed trains once with each class (interleaved, so load from other processes hits both),
with RL Zoo's CartPole hyperparameters. Reported per run: wall time of ``learn()``, env steps
per second, the mean return of the last 20 training episodes and a deterministic
evaluation over 20 episodes. With the same seed both classes feed PPO the same
observations, rewards and terminal observations, so the returns should match exactly and
only the time differs. See benchmarks/README.md for measured numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import SubprocVecEnv as SB3SubprocVecEnv

from vecpg.sb3 import SubprocVecEnv

CLASSES = {"vecpg.sb3": SubprocVecEnv, "sb3": SB3SubprocVecEnv}


def train_once(vec_env_cls: Any, num_envs: int, total_steps: int, seed: int) -> dict[str, Any]:
    envs = make_vec_env("CartPole-v1", n_envs=num_envs, seed=seed, vec_env_cls=vec_env_cls)
    try:
        model = PPO(
            "MlpPolicy", envs, n_steps=max(1, 256 // num_envs), batch_size=256,
            gae_lambda=0.8, gamma=0.98, n_epochs=20, learning_rate=1e-3, seed=seed,
        )  # fmt: skip
        started = time.perf_counter()
        model.learn(total_timesteps=total_steps)
        seconds = time.perf_counter() - started
        train_returns = [episode["r"] for episode in model.ep_info_buffer]
        eval_returns, _ = evaluate_policy(
            model, envs, n_eval_episodes=20, deterministic=True, return_episode_rewards=True
        )
    finally:
        envs.close()
    return {
        "seed": seed,
        "learn_seconds": seconds,
        "steps_per_second": model.num_timesteps / seconds,
        "train_return_last_20": float(np.mean(train_returns[-20:])),
        "eval_return_mean": float(np.mean(eval_returns)),
        "eval_returns": [float(value) for value in eval_returns],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="benchmarks/results/sb3_ppo.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLASSES}
    for seed in args.seeds:
        for name, vec_env_cls in CLASSES.items():
            run = train_once(vec_env_cls, args.num_envs, args.total_steps, seed)
            runs[name].append(run)
            print(
                f"{name:<10} seed {seed}: learn {run['learn_seconds']:6.1f} s "
                f"({run['steps_per_second']:,.0f} steps/s), train return (last 20) "
                f"{run['train_return_last_20']:.1f}, eval return {run['eval_return_mean']:.1f}",
                flush=True,
            )
    ratios = [
        theirs["learn_seconds"] / ours["learn_seconds"]
        for ours, theirs in zip(runs["vecpg.sb3"], runs["sb3"], strict=True)
    ]
    same = all(
        ours["eval_returns"] == theirs["eval_returns"]
        and ours["train_return_last_20"] == theirs["train_return_last_20"]
        for ours, theirs in zip(runs["vecpg.sb3"], runs["sb3"], strict=True)
    )
    summary = {
        "settings": vars(args),
        "runs": runs,
        "speedup_median": statistics.median(ratios),
        "speedups": ratios,
        "same_returns": same,
    }
    print(
        f"learn() time, SB3 SubprocVecEnv / vecpg.sb3: median {summary['speedup_median']:.2f}x "
        f"({', '.join(f'{ratio:.2f}' for ratio in ratios)}); identical returns: {same}"
    )
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
