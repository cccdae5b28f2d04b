"""Stable-Baselines3 trained with vecpg's preset: a peer oracle for the quality table.

    python benchmarks/sb3_oracle.py --env LunarLander-v3 --algo a2c --seeds 1 2 3
    python benchmarks/sb3_oracle.py --env Pendulum-v1 --algo a2c --sb3 use_sde=false

Where a row of benchmarks/QUALITY.md falls short of its published figure, the question is
whether vecpg's learner or the settings are at fault. This script answers it with a peer:
it resolves the config that ``vecpg train --env ENV --algo ALGO`` would run (the env's
preset, :func:`vecpg.run.config.resolve_config`), translates it to SB3's A2C or PPO
(:func:`sb3_settings`) and scores SB3 as ``benchmarks/quality.py`` scores vecpg: the mean
return of the last 20 training episodes, and the mean return of 20 deterministic
episodes on env seeds training never used. If SB3 lands where vecpg does, the gap is in
the published figure or in what the preset can express, not in vecpg's learner.

``--sb3 KEY=VALUE`` sets SB3 constructor arguments on top of the translation (values are
parsed as JSON, else kept as strings), e.g. ``use_sde=false`` to see what gSDE buys. Each seed appends one JSON line to ``--results``; the table prints at
the end. SB3 runs with one torch thread, as vecpg's MLP learner does.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVAL_EPISODES = 20
EVAL_SEED_OFFSET = 1_000_000  # eval env seeds: far from the ones training used
LAST_EPISODES = 20  # as vecpg's episode_return_mean
CURVE_EVERY = 10_000  # env steps between two points of the recorded learning curve


def sb3_settings(config: Any) -> tuple[dict[str, Any], list[str]]:
    """SB3 constructor arguments equal to a vecpg :class:`TrainConfig`, and what differs.

    The returned dict holds the ``A2C``/``PPO`` keyword arguments plus three keys that are
    not constructor arguments: ``n_envs``, ``normalize`` (VecNormalize on observations and
    rewards, as a dict of its flags) and ``total_steps``. The translation is the inverse of
    the one ``vecpg/run/presets.py`` documents: vecpg's value loss is ``0.5 * MSE`` where
    SB3's is ``MSE`` (``vf_coef`` halves), ``num_minibatches`` becomes ``batch_size``, and
    ``anneal_lr`` a linear schedule.

    Raises:
        ValueError: a setting SB3's learner cannot run (one line, naming it).
    """
    import torch

    if config.algo not in ("a2c", "ppo"):
        raise ValueError(f"SB3 has no {config.algo!r} learner to compare with")
    if config.advantage != "gae":
        raise ValueError(f"advantage {config.advantage!r}: SB3 only computes GAE")
    if config.squash:
        raise ValueError("squash: SB3 squashes Gaussian actions only with use_sde")
    if config.shared_trunk:
        raise ValueError("shared_trunk: compare an MLP preset with separate actor and critic")
    if config.max_grad_norm <= 0:
        raise ValueError("max_grad_norm 0 (no clipping): SB3 always clips")
    learning_rate: Any = config.learning_rate
    if config.anneal_lr:
        initial = float(config.learning_rate)
        learning_rate = _LinearSchedule(initial)
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[config.activation]
    policy_kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(config.hidden_sizes), "vf": list(config.hidden_sizes)},
        "activation_fn": activation,
        "ortho_init": bool(config.ortho_init),
        "log_std_init": float(config.log_std_init),
    }
    settings: dict[str, Any] = {
        "n_envs": config.num_envs,
        "total_steps": config.total_steps,
        "normalize": {
            "norm_obs": bool(config.normalize_observations),
            "norm_reward": bool(config.normalize_rewards),
        },
        "n_steps": config.num_steps,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "learning_rate": learning_rate,
        "ent_coef": config.ent_coef,
        "vf_coef": config.vf_coef / 2.0,
        "max_grad_norm": config.max_grad_norm,
        "normalize_advantage": bool(config.normalize_advantages),
        "use_sde": bool(config.use_sde),
        "sde_sample_freq": config.sde_sample_freq,
        "policy_kwargs": policy_kwargs,
    }
    notes = [f"vf_coef {config.vf_coef:g} -> {config.vf_coef / 2:g} (SB3's value loss is MSE)"]
    if config.algo == "ppo":
        rollout = config.num_envs * config.num_steps
        settings.update(
            n_epochs=config.num_epochs,
            batch_size=rollout // config.num_minibatches,
            clip_range=config.clip_coef,
            clip_range_vf=config.clip_coef if config.clip_value_loss else None,
            target_kl=config.target_kl,
        )
        if config.optimizer != "adam":
            raise ValueError(f"optimizer {config.optimizer!r}: SB3's PPO runs Adam")
        policy_kwargs["optimizer_kwargs"] = {"eps": config.optimizer_eps}
    else:
        settings["use_rms_prop"] = config.optimizer == "rmsprop"
        if config.optimizer == "rmsprop":  # torch's RMSprop (alpha 0.99), as vecpg's
            settings["rms_prop_eps"] = config.optimizer_eps
        else:
            policy_kwargs["optimizer_kwargs"] = {"eps": config.optimizer_eps}
    return settings, notes


class _LinearSchedule:
    """SB3 learning-rate schedule: ``initial`` at the start, 0 at the end (picklable)."""

    def __init__(self, initial: float) -> None:
        self.initial = initial

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"linear({self.initial:g})"


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["use_sde=true", "sde_sample_freq=4"]`` -> ``{"use_sde": True, ...}``."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"--sb3 takes KEY=VALUE (got {pair!r})")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def run_seed(env_id: str, algo: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train SB3 once with vecpg's resolved preset for ``env_id``; both scores."""
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from vecpg.run.config import resolve_config

    torch.set_num_threads(1)
    config = resolve_config(cli_values={"env": env_id, "algo": algo, "seed": seed})
    settings, notes = sb3_settings(config)
    n_envs, total_steps = settings.pop("n_envs"), settings.pop("total_steps")
    normalize = settings.pop("normalize")
    settings.update(overrides)
    train_env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=config.env_kwargs)
    if normalize["norm_obs"] or normalize["norm_reward"]:
        train_env = VecNormalize(train_env, gamma=config.gamma, **normalize)
    learner = {"a2c": A2C, "ppo": PPO}[algo]("MlpPolicy", train_env, seed=seed, **settings)
    curve: list[tuple[int, float]] = []
    started = time.perf_counter()
    learner.learn(total_timesteps=total_steps, callback=_curve_callback(curve))
    wall_s = time.perf_counter() - started
    last = [float(info["r"]) for info in list(learner.ep_info_buffer)[-LAST_EPISODES:]]
    eval_env = make_vec_env(
        env_id, n_envs=1, seed=EVAL_SEED_OFFSET + seed, env_kwargs=config.env_kwargs
    )
    if isinstance(train_env, VecNormalize):  # frozen training statistics, raw rewards
        eval_env = VecNormalize(
            eval_env, training=False, norm_obs=normalize["norm_obs"], norm_reward=False
        )
        eval_env.obs_rms = train_env.obs_rms
    returns, _ = evaluate_policy(
        learner,
        eval_env,
        n_eval_episodes=EVAL_EPISODES,
        deterministic=True,
        return_episode_rewards=True,
    )
    assert isinstance(returns, list)  # one return per episode, as asked
    train_env.close()
    eval_env.close()
    return {
        "kind": "sb3",
        "env": env_id,
        "algo": algo,
        "seed": seed,
        "final_return": statistics.fmean(last) if last else math.nan,
        "eval_return": statistics.fmean(float(r) for r in returns),
        "global_step": int(learner.num_timesteps),
        "curve": curve,
        "wall_s": round(wall_s, 1),
        "preset": config.preset,
        "settings": {key: repr(value) for key, value in settings.items()},
        "notes": notes,
        "versions": _versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _curve_callback(curve: list[tuple[int, float]]) -> Any:
    """An SB3 callback appending ``(env steps, mean return of the last 20 episodes)`` to
    ``curve`` every CURVE_EVERY steps: the signal vecpg's metrics.csv records as
    ``episode_return_mean``, so the two learning curves can be laid side by side."""
    from stable_baselines3.common.callbacks import BaseCallback

    class CurveCallback(BaseCallback):
        def _on_step(self) -> bool:
            episodes = list(self.model.ep_info_buffer)[-LAST_EPISODES:]
            step = int(self.num_timesteps)
            if episodes and step // CURVE_EVERY > (curve[-1][0] // CURVE_EVERY if curve else 0):
                curve.append((step, statistics.fmean(float(info["r"]) for info in episodes)))
            return True

    return CurveCallback()


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for package in ("stable_baselines3", "torch", "gymnasium"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per (env, algo, SB3 overrides): both scores, mean ± std and per seed."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for result in results:
        overrides = json.dumps(result.get("overrides", {}), sort_keys=True)
        groups.setdefault((result["env"], result["algo"], overrides), []).append(result)
    lines = [
        "| env | algo | SB3 overrides | training return, mean ± std | per seed "
        "| deterministic eval, mean ± std | per seed | steps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (env, algo, overrides), rows in groups.items():
        rows = sorted(rows, key=lambda row: row["seed"])
        finals = [row["final_return"] for row in rows]
        evals = [row["eval_return"] for row in rows]
        lines.append(
            f"| {env} | {algo} | {overrides if overrides != '{}' else '-'} "
            f"| {_mean_std(finals)} | {' '.join(f'{v:.1f}' for v in finals)} "
            f"| {_mean_std(evals)} | {' '.join(f'{v:.1f}' for v in evals)} "
            f"| {rows[0]['global_step']:,} |"
        )
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else math.nan
    return f"{statistics.fmean(values):.1f} ± {std:.1f} ({len(values)})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", required=True, choices=("a2c", "ppo"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--sb3", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "sb3_oracle.jsonl")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.sb3)
    except ValueError as error:
        parser.error(str(error))
    results = []
    for seed in args.seeds:
        result = {**run_seed(args.env, args.algo, seed, overrides), "overrides": overrides}
        results.append(result)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with args.results.open("a") as stream:
            stream.write(json.dumps(result) + "\n")
        print(
            f"{args.env} {args.algo} seed {seed}: training {result['final_return']:.1f}, "
            f"deterministic {result['eval_return']:.1f} in {result['wall_s']:.0f} s",
            flush=True,
        )
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
