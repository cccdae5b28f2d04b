"""Stable-Baselines3 trained with vecpg's preset: a peer oracle for the quality table.

    python benchmarks/sb3_oracle.py --env LunarLander-v3 --algo a2c --seeds 1 2 3
    python benchmarks/sb3_oracle.py --env Pendulum-v1 --algo a2c --sb3 use_sde=false
    python benchmarks/sb3_oracle.py --shadow RUN_DIR/checkpoints/step_000001000000.pt

Where a row of benchmarks/QUALITY.md falls short of its published figure, the question is
whether vecpg's learner or the settings are at fault. This script answers it with a peer:
it resolves the config that ``vecpg train --env ENV --algo ALGO`` would run (the env's
preset, :func:`vecpg.run.config.resolve_config`), translates it to SB3's A2C or PPO
(:func:`sb3_settings`) and scores SB3 as ``benchmarks/quality.py`` scores vecpg: the mean
return of the last 20 training episodes, and the mean return of 20 deterministic
episodes on env seeds training never used. If SB3 lands where vecpg does, the gap is in
the published figure or in what the preset can express, not in vecpg's learner.

``--shadow CHECKPOINT`` asks a narrower question of a vecpg A2C run (MLP, Box actions,
RMSprop, one env, a plain Gaussian: the settings whose parameters and optimizer state
SB3 takes one for one): from the checkpoint's weights, optimizer state and normalizer
statistics, do SB3's updates follow vecpg's over the rollouts vecpg goes on to collect?
It prints the parameters' relative distance after chosen updates, beside the distance
between two SB3 copies started 1e-7 apart over the same rollouts (how fast rounding
alone spreads).

``--sb3 KEY=VALUE`` sets SB3 constructor arguments on top of the translation (values are
parsed as JSON, else kept as strings), e.g. ``use_sde=false`` to see what gSDE buys. Each seed appends one JSON line to ``--results``; the table prints at
the end. SB3 runs with one torch thread, as vecpg's MLP learner does.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
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


# vecpg's ActorCritic parameter -> SB3's ActorCriticPolicy parameter (separate 2-layer MLPs)
SB3_NAMES = {
    "actor_body.layers.0.weight": "mlp_extractor.policy_net.0.weight",
    "actor_body.layers.0.bias": "mlp_extractor.policy_net.0.bias",
    "actor_body.layers.2.weight": "mlp_extractor.policy_net.2.weight",
    "actor_body.layers.2.bias": "mlp_extractor.policy_net.2.bias",
    "critic_body.layers.0.weight": "mlp_extractor.value_net.0.weight",
    "critic_body.layers.0.bias": "mlp_extractor.value_net.0.bias",
    "critic_body.layers.2.weight": "mlp_extractor.value_net.2.weight",
    "critic_body.layers.2.bias": "mlp_extractor.value_net.2.bias",
    "action_head.log_std": "log_std",
    "action_head.linear.weight": "action_net.weight",
    "action_head.linear.bias": "action_net.bias",
    "value_head.weight": "value_net.weight",
    "value_head.bias": "value_net.bias",
}


def sb3_rollout_from_vecpg(buffer: Any, rollout: Any, gamma: float, episode_start: Any) -> Any:
    """Fill SB3's (reset) ``rollout`` buffer with vecpg's filled ``buffer`` [T, N], as SB3's
    ``collect_rollouts`` would have: a truncated step's reward gets ``gamma * V(final
    obs)`` and ends the episode. Returns the episode starts that follow the last step."""
    for step in range(buffer.num_steps):
        terminated = buffer.terminations[step].cpu().numpy().astype(bool)
        truncated = buffer.truncations[step].cpu().numpy().astype(bool) & ~terminated
        rewards = buffer.rewards[step].cpu().numpy().copy()
        rewards[truncated] += gamma * buffer.final_values[step].cpu().numpy()[truncated]
        rollout.add(
            buffer.observations[step].cpu().numpy(),
            buffer.actions[step].cpu().numpy(),
            rewards,
            episode_start,
            buffer.values[step].reshape(-1, 1),
            buffer.log_probs[step],
        )
        episode_start = terminated | truncated
    rollout.compute_returns_and_advantage(buffer.next_values[-1], episode_start)
    return episode_start


def shadow(checkpoint: Path, report_at: Sequence[int]) -> list[dict[str, float]]:
    """SB3's A2C and a 1e-7-perturbed copy of it, started from a vecpg A2C checkpoint,
    updated on the rollouts vecpg collects from there; one row per update in
    ``report_at``: ``{"update", "vecpg_sb3", "sb3_sb3"}``, the largest relative
    parameter distance (max |a - b| / max |a| over tensors)."""
    import numpy as np
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    from vecpg.run.resume import resume_config
    from vecpg.run.trainer import Trainer

    torch.set_num_threads(1)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved = state["config"]
    if saved["algo"] != "a2c" or saved["optimizer"] != "rmsprop":
        raise ValueError("--shadow needs an A2C checkpoint with the RMSprop optimizer")
    # SB3's parameters and RMSprop state take vecpg's one for one only for a plain Gaussian
    # (gSDE's exploration matrix has another shape), and the comparison steps one env.
    if saved["num_envs"] != 1 or saved["use_sde"]:
        raise ValueError("--shadow needs a one-env A2C checkpoint without use_sde")
    run_dir = tempfile.mkdtemp(prefix="vecpg-shadow-")
    config = resume_config(saved, {"vector": "sync", "run_dir": run_dir})
    settings, _ = sb3_settings(config)
    for key in ("n_envs", "total_steps", "normalize"):
        settings.pop(key)
    learners = [
        A2C("MlpPolicy", make_vec_env(config.env, n_envs=1), device="cpu", **settings)
        for _ in range(2)
    ]
    trainer = None
    try:
        trainer = Trainer(config, run_dir=run_dir)
        trainer.load_state_dict(state)
        ours = dict(trainer.policy.named_parameters())
        theirs = [dict(learner.policy.named_parameters()) for learner in learners]
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, sb3_name in SB3_NAMES.items():
                for copy_index, (learner, params) in enumerate(zip(learners, theirs, strict=True)):
                    value = ours[name].clone()
                    if copy_index == 1:  # the twin: 1e-7 of each tensor's scale apart
                        noise = torch.randn(value.shape, generator=generator)
                        value += noise * 1e-7 * value.abs().max()
                    params[sb3_name].copy_(value)
                    optimizer_state = trainer.learner.optimizer.state[ours[name]]
                    learner.policy.optimizer.state[params[sb3_name]] = {
                        key: tensor.clone() for key, tensor in optimizer_state.items()
                    }
        for learner in learners:
            learner.set_logger(configure(None, []))

        def distance(a: dict[str, Any], b: dict[str, Any], names: dict[str, str]) -> float:
            return max(
                float((a[x] - b[y]).abs().max() / (a[x].abs().max() + 1e-12))
                for x, y in names.items()
            )

        same = {name: name for name in SB3_NAMES.values()}
        rows: list[dict[str, float]] = []
        starts = [np.ones(config.num_envs, dtype=bool) for _ in learners]
        # Env seeds the run never used, as for the evaluation: a fresh stretch of rollouts.
        trainer.sampler.reset(seed=config.seed + EVAL_SEED_OFFSET)
        for update in range(1, max(report_at) + 1):
            trainer.sampler.collect()
            for index, learner in enumerate(learners):
                learner.rollout_buffer.reset()
                starts[index] = sb3_rollout_from_vecpg(
                    trainer.buffer, learner.rollout_buffer, config.gamma, starts[index]
                )
            trainer.learner.update(trainer.buffer)
            for learner in learners:
                learner.train()
            if update in report_at:
                with torch.no_grad():
                    rows.append(
                        {
                            "update": update,
                            "vecpg_sb3": distance(ours, theirs[0], SB3_NAMES),
                            "sb3_sb3": distance(theirs[0], theirs[1], same),
                        }
                    )
        return rows
    finally:
        if trainer is not None:
            trainer.close()
        for learner in learners:
            learner.get_env().close()
        shutil.rmtree(run_dir, ignore_errors=True)


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
    parser.add_argument("--env")
    parser.add_argument("--algo", choices=("a2c", "ppo"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--sb3", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "sb3_oracle.jsonl")
    parser.add_argument("--shadow", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "--report-at", nargs="+", type=int, default=[1, 10, 100, 1000], metavar="UPDATE"
    )
    args = parser.parse_args(argv)
    if args.shadow is not None:
        try:
            rows = shadow(args.shadow, args.report_at)
        except ValueError as error:
            parser.error(str(error))
        print("| update | vecpg vs SB3 | SB3 vs SB3 started 1e-7 apart |")
        print("| --- | --- | --- |")
        for row in rows:
            print(f"| {row['update']} | {row['vecpg_sb3']:.1e} | {row['sb3_sb3']:.1e} |")
        return 0
    if args.env is None or args.algo is None:
        parser.error("--env and --algo are required (or --shadow CHECKPOINT)")
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
