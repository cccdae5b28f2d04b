"""Atari PPO training speed on the CPU: vecpg against Stable-Baselines3, same run.

    python benchmarks/atari_training.py                       # Pong, 8 envs, 3 rounds of 4 updates
    python benchmarks/atari_training.py --updates 8 --rounds 5 --vector subproc native
    python benchmarks/atari_training.py --out benchmarks/results/atari_training.json

Both train PPO with CleanRL's ``ppo_atari`` settings (8 envs x 128 steps, 4 minibatches of
256, 4 epochs, clip 0.1, ...) and the same network (NatureCNN shared by actor and critic,
linear heads) on the DeepMind preprocessing: vecpg through ``vecpg train``'s Trainer with
the ``atari`` preset, SB3 as ``PPO("CnnPolicy", make_atari_env(...) + VecFrameStack(4))``
with ``SubprocVecEnv``. Both use torch's default thread count for the update. A run
trains ``updates`` rollouts after one warm-up update; its rate is env steps over the wall
time of those updates. Rounds alternate the order of the contenders; rates are medians.
vecpg's rows also give the sampling/update split; SB3's is not exposed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

GAMES = {"pong": "ALE/Pong-v5", "breakout": "ALE/Breakout-v5"}


def vecpg_rate(env_id: str, vector: str, num_envs: int, updates: int, seed: int) -> dict[str, Any]:
    from vecpg.run.config import resolve_config
    from vecpg.run.trainer import Trainer

    steps_per_update = num_envs * 128
    rows: list[dict[str, Any]] = []

    class Rows:
        def on_update(self, trainer: Any, row: dict[str, Any]) -> None:
            rows.append(row)

    config = resolve_config(
        cli_values={
            "env": env_id,
            "vector": vector,
            "num_envs": num_envs,
            "seed": seed,
            "total_steps": steps_per_update * (updates + 1),
        }
    )
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(config, run_dir, callbacks=[Rows()]).train()
    timed = rows[1:]  # the first update warms up torch and the envs
    sampling = sum(row["sampling_time_s"] for row in timed)
    update = sum(row["update_time_s"] for row in timed)
    return {
        "steps_per_second": steps_per_update * len(timed) / (sampling + update),
        "sampling_fraction": sampling / (sampling + update),
    }


def sb3_rate(env_id: str, num_envs: int, updates: int, seed: int) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack

    env = make_atari_env(
        f"ale_py:{env_id}",  # the prefix imports ale_py (which registers ALE/...) in SB3's workers
        n_envs=num_envs,
        seed=seed,
        vec_env_cls=SubprocVecEnv,
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
    )
    env = VecFrameStack(env, n_stack=4)
    starts: list[float] = []

    class RolloutStarts(BaseCallback):
        def _on_rollout_start(self) -> None:
            starts.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

    model = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        batch_size=num_envs * 128 // 4,
        n_epochs=4,
        learning_rate=lambda remaining: 2.5e-4 * remaining,
        clip_range=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        max_grad_norm=0.5,
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=num_envs * 128 * (updates + 1), callback=RolloutStarts())
    end = time.perf_counter()
    env.close()
    return {"steps_per_second": num_envs * 128 * updates / (end - starts[1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="pong", choices=list(GAMES))
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--updates", type=int, default=4, help="timed updates per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vector", nargs="+", default=["subproc"], help="vecpg backends")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    env_id = GAMES[args.game]
    contenders = [f"vecpg-{vector}" for vector in args.vector] + ["sb3"]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {env_id} x{args.num_envs}"
    )
    for round_index in range(args.rounds):
        shift = round_index % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            if name == "sb3":
                result = sb3_rate(env_id, args.num_envs, args.updates, args.seed + round_index)
            else:
                vector = name.removeprefix("vecpg-")
                result = vecpg_rate(
                    env_id, vector, args.num_envs, args.updates, args.seed + round_index
                )
            results[name].append(result)
            print(f"round {round_index + 1}: {name} {result}", flush=True)
    sb3 = statistics.median(result["steps_per_second"] for result in results["sb3"])
    summary: dict[str, dict[str, float]] = {}
    for name in contenders:
        rate = statistics.median(result["steps_per_second"] for result in results[name])
        summary[name] = {"steps_per_second": rate, "x_sb3": rate / sb3}
        split = [
            result["sampling_fraction"] for result in results[name] if "sampling_fraction" in result
        ]
        split_text = ""
        if split:
            summary[name]["sampling_fraction"] = statistics.median(split)
            split_text = f", sampling {statistics.median(split):.0%} of the time"
        print(f"{name}: {rate:,.1f} steps/s (median), {rate / sb3:.2f}x SB3{split_text}")
    if args.out:
        report = {
            "env": env_id,
            "num_envs": args.num_envs,
            "updates": args.updates,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "runs": results,
            "medians": summary,
        }
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
