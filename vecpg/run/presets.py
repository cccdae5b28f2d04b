"""Hyperparameter presets per env family: what ``vecpg train --env X`` uses for X.

A :class:`Family` names the env ids it covers (``fnmatch`` patterns), the settings of each
algorithm for the whole family, and per-env settings on top where the published tuning
differs inside the family (rollout size, budget). Every value set cites its source beside
it. :func:`preset_values` is what :func:`vecpg.run.config.resolve_config` asks; every
family, Atari's included, joins with :func:`register`.

Precedence (lowest first): field defaults, the algorithm's defaults, the preset, the
config file, the command line. ``--preset none`` skips this layer; the resolved config
records the family that applied (``preset: classic-control``), or ``none``.

Translating Stable-Baselines3 / rl-zoo settings:

- ``batch_size`` is a minibatch size: ``num_minibatches = n_envs * n_steps / batch_size``;
- SB3's value loss is ``MSE``, vecpg's (and CleanRL's) ``0.5 * MSE``: ``vf_coef`` doubles;
- ``lin_X`` learning rates are ``learning_rate X`` with ``anneal_lr`` (both go linearly to
  0); vecpg does not anneal the clip range;
- ``normalize: true`` (VecNormalize) is ``normalize_observations`` and
  ``normalize_rewards``;
- ``use_sde`` and ``sde_sample_freq`` (generalized state-dependent exploration) carry over
  as they are (:class:`vecpg.distributions.StateDependentGaussian`); the PPO entry of
  Pendulum keeps a plain Gaussian (marked "without use_sde"), with which its quality
  figure was measured (benchmarks/QUALITY.md);
- SB3 defaults fill in what an entry leaves out: PPO lr 3e-4, batch 64, 10 epochs,
  gamma 0.99, lambda 0.95, clip 0.2, no value clipping; A2C n_steps 5, lr 7e-4, gamma
  0.99, lambda 1, RMSprop (alpha 0.99, eps 1e-5), no advantage normalization.

Sources: DLR-RM/rl-baselines3-zoo ``hyperparams/ppo.yml`` @ 208b6fdf and
``hyperparams/a2c.yml`` @ c6c209e7 ("zoo" below); vwxyzjn/cleanrl
``cleanrl/ppo_continuous_action.py`` (its ``Args`` defaults; "CleanRL" below).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vecpg.errors import ConfigError

AUTO, NONE = "auto", "none"


@dataclass(frozen=True)
class Preset:
    """Settings (TrainConfig field: value) and where they come from."""

    values: Mapping[str, Any]
    source: str


@dataclass(frozen=True)
class Family:
    """Env ids (``fnmatch`` patterns) sharing tuned settings per algorithm.

    Attributes:
        name: what ``--preset`` and config.yaml call it.
        envs: patterns of the env ids it covers, e.g. ``"CartPole-v*"``.
        presets: algorithm -> settings for every env of the family.
        env_presets: env pattern -> algorithm -> settings applied on top of ``presets``.
    """

    name: str
    envs: tuple[str, ...]
    presets: Mapping[str, Preset]
    env_presets: Mapping[str, Mapping[str, Preset]] = field(default_factory=dict)

    def covers(self, env: str) -> bool:
        return any(fnmatch.fnmatchcase(env, pattern) for pattern in self.envs)

    def applies(self, env: str, algo: str) -> bool:
        """Whether the family has settings for ``algo`` (for every env, or ``env``'s own)."""
        return algo in self.presets or any(
            fnmatch.fnmatchcase(env, pattern) and algo in per_algo
            for pattern, per_algo in self.env_presets.items()
        )

    def values(self, env: str, algo: str) -> dict[str, Any]:
        """The family's settings for ``algo``, with ``env``'s own on top."""
        values = dict(self.presets[algo].values) if algo in self.presets else {}
        for pattern, per_algo in self.env_presets.items():
            if fnmatch.fnmatchcase(env, pattern) and algo in per_algo:
                values.update(per_algo[algo].values)
        return values


_ZOO_PPO = "rl-zoo hyperparams/ppo.yml @ 208b6fdf"
_ZOO_A2C = "rl-zoo hyperparams/a2c.yml @ c6c209e7"
_CLEANRL_CONTINUOUS = "CleanRL cleanrl/ppo_continuous_action.py"

# SB3's A2C defaults, as vecpg options (vf_coef 0.5 in SB3 = 1.0 here).
SB3_A2C = {
    "num_steps": 5,
    "learning_rate": 7e-4,
    "anneal_lr": False,
    "gamma": 0.99,
    "advantage": "gae",
    "gae_lambda": 1.0,
    "optimizer": "rmsprop",
    "optimizer_eps": 1e-5,
    "normalize_advantages": False,
    "ent_coef": 0.0,
    "vf_coef": 1.0,
    "max_grad_norm": 0.5,
}
# rl-zoo's tuned A2C for continuous control (Pendulum, LunarLanderContinuous,
# BipedalWalker, the Bullet envs): SB3 A2C with these changes.
_ZOO_A2C_CONTINUOUS = {
    **SB3_A2C,
    "normalize_observations": True,
    "normalize_rewards": True,
    "num_steps": 8,
    "gae_lambda": 0.9,
    "vf_coef": 0.8,  # zoo 0.4
    "anneal_lr": True,
    "log_std_init": -2.0,
    "ortho_init": False,
    "use_sde": True,
}

CLASSIC_CONTROL = Family(
    name="classic-control",
    envs=("CartPole-v*", "Acrobot-v*", "MountainCar-v*"),
    presets={
        # vecpg's own defaults (tuned for CartPole wall time, benchmarks/TRAINING.md) for
        # CartPole; Acrobot and MountainCar take their published settings below.
        "ppo": Preset({}, "vecpg's defaults (benchmarks/TRAINING.md)"),
        "a2c": Preset({}, "vecpg's defaults (benchmarks/TRAINING.md)"),
    },
    env_presets={
        "CartPole-v*": {
            # rl-zoo's 8 envs, each rolling out 32 steps (the same 256-step batch as the
            # defaults' 16 x 16): fewer envs finish the last 20 full-length episodes that
            # prove a solve sooner (median env steps to solve in benchmarks/training.py at
            # commit 04601e0: 31.5k against 46.8k).
            "ppo": Preset(
                {"total_steps": 100_000, "num_envs": 8, "num_steps": 32},
                f"budget and 8 envs: {_ZOO_PPO} CartPole-v1; 32 steps: vecpg's measurement",
            ),
            "a2c": Preset({"total_steps": 500_000}, f"budget: {_ZOO_A2C} CartPole-v1"),
        },
        "Acrobot-v*": {
            "ppo": Preset(
                {
                    "total_steps": 1_000_000,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                    "num_envs": 16,
                    "num_steps": 256,
                    "num_minibatches": 64,  # 16 * 256 / batch 64
                    "num_epochs": 4,
                    "gamma": 0.99,
                    "gae_lambda": 0.94,
                    "learning_rate": 3e-4,
                    "anneal_lr": False,
                    "clip_coef": 0.2,
                    "ent_coef": 0.0,
                    "vf_coef": 1.0,
                },
                f"{_ZOO_PPO} Acrobot-v1",
            ),
            "a2c": Preset(
                {
                    **SB3_A2C,
                    "total_steps": 500_000,
                    "num_envs": 16,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                },
                f"{_ZOO_A2C} Acrobot-v1",
            ),
        },
        "MountainCar-v*": {
            "ppo": Preset(
                {
                    "total_steps": 1_000_000,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                    "num_envs": 16,
                    "num_steps": 16,
                    "gamma": 0.99,
                    "gae_lambda": 0.98,
                    "num_epochs": 4,
                    "num_minibatches": 4,  # 16 * 16 / batch 64
                    "learning_rate": 3e-4,
                    "anneal_lr": False,
                    "ent_coef": 0.0,
                    "vf_coef": 1.0,
                },
                f"{_ZOO_PPO} MountainCar-v0",
            ),
            "a2c": Preset(
                {
                    **SB3_A2C,
                    "total_steps": 1_000_000,
                    "num_envs": 16,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                },
                f"{_ZOO_A2C} MountainCar-v0",
            ),
        },
    },
)

CLASSIC_CONTINUOUS = Family(
    name="classic-continuous",
    envs=("Pendulum-v*", "MountainCarContinuous-v*"),
    presets={},
    env_presets={
        "Pendulum-v*": {
            "ppo": Preset(
                {
                    "total_steps": 100_000,
                    "num_envs": 4,
                    "num_steps": 1024,
                    "num_minibatches": 64,  # 4 * 1024 / batch 64
                    "num_epochs": 10,
                    "gamma": 0.9,
                    "gae_lambda": 0.95,
                    "learning_rate": 1e-3,
                    "anneal_lr": False,
                    "clip_coef": 0.2,
                    "ent_coef": 0.0,
                    "vf_coef": 1.0,
                },
                f"{_ZOO_PPO} Pendulum-v1 (without use_sde)",
            ),
            "a2c": Preset(
                {**_ZOO_A2C_CONTINUOUS, "total_steps": 1_000_000, "num_envs": 8, "gamma": 0.9},
                f"{_ZOO_A2C} Pendulum-v1",
            ),
        },
        "MountainCarContinuous-v*": {
            "ppo": Preset(
                {
                    "total_steps": 20_000,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                    "num_envs": 1,
                    "num_steps": 8,
                    "num_minibatches": 1,  # batch 256 > the 8-step rollout
                    "num_epochs": 10,
                    "gamma": 0.9999,
                    "gae_lambda": 0.9,
                    "learning_rate": 7.77e-5,
                    "anneal_lr": False,
                    "clip_coef": 0.1,
                    "ent_coef": 0.00429,
                    "vf_coef": 0.38,  # zoo 0.19
                    "max_grad_norm": 5.0,
                    "log_std_init": -3.29,
                    "ortho_init": False,
                    # A plain Gaussian at this log-std often never reaches the flag: seeds
                    # 1-3 scored -0.4, 88.4, 95.6 deterministic, gSDE 78.6, 91.5, 92.3
                    # (`vecpg eval RUN_DIR --episodes 20` of 20k-step runs at 0e5716a).
                    "use_sde": True,
                },
                f"{_ZOO_PPO} MountainCarContinuous-v0",
            ),
            "a2c": Preset(
                {
                    **SB3_A2C,
                    "total_steps": 100_000,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                    "num_envs": 4,
                    "num_steps": 100,
                    "ortho_init": False,
                    "use_sde": True,
                    "sde_sample_freq": 16,
                },
                f"{_ZOO_A2C} MountainCarContinuous-v0",
            ),
        },
    },
)

# rl-zoo's LunarLander PPO (the same for the continuous version).
_ZOO_LUNAR_PPO = {
    "total_steps": 1_000_000,
    "num_envs": 16,
    "num_steps": 1024,
    "num_minibatches": 256,  # 16 * 1024 / batch 64
    "num_epochs": 4,
    "gamma": 0.999,
    "gae_lambda": 0.98,
    "learning_rate": 3e-4,
    "anneal_lr": False,
    "clip_coef": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 1.0,
    "max_grad_norm": 0.5,
}

BOX2D = Family(
    name="box2d",
    envs=("LunarLander-v*", "LunarLanderContinuous-v*", "BipedalWalker-v*"),
    presets={},
    env_presets={
        "LunarLander-v*": {
            "ppo": Preset(_ZOO_LUNAR_PPO, f"{_ZOO_PPO} LunarLander-v2"),
            "a2c": Preset(
                {
                    **SB3_A2C,
                    "total_steps": 200_000,
                    "num_envs": 8,
                    "gamma": 0.995,
                    "learning_rate": 8.3e-4,
                    "anneal_lr": True,
                    "ent_coef": 1e-5,
                },
                f"{_ZOO_A2C} LunarLander-v2",
            ),
        },
        "LunarLanderContinuous-v*": {
            "ppo": Preset(_ZOO_LUNAR_PPO, f"{_ZOO_PPO} LunarLanderContinuous-v3"),
            "a2c": Preset(
                {**_ZOO_A2C_CONTINUOUS, "total_steps": 5_000_000, "num_envs": 4},
                f"{_ZOO_A2C} LunarLanderContinuous-v3",
            ),
        },
        "BipedalWalker-v*": {
            "ppo": Preset(
                {
                    "total_steps": 5_000_000,
                    "normalize_observations": True,
                    "normalize_rewards": True,
                    "num_envs": 32,
                    "num_steps": 2048,
                    "num_minibatches": 1024,  # 32 * 2048 / batch 64
                    "num_epochs": 10,
                    "gamma": 0.999,
                    "gae_lambda": 0.95,
                    "learning_rate": 3e-4,
                    "anneal_lr": False,
                    "clip_coef": 0.18,
                    "ent_coef": 0.0,
                    "vf_coef": 1.0,
                },
                f"{_ZOO_PPO} BipedalWalker-v3",
            ),
            "a2c": Preset(
                {
                    **_ZOO_A2C_CONTINUOUS,
                    "total_steps": 5_000_000,
                    "num_envs": 16,
                    "learning_rate": 9.6e-4,
                },
                f"{_ZOO_A2C} BipedalWalker-v3",
            ),
        },
    },
)

MUJOCO = Family(
    name="mujoco",
    envs=("HalfCheetah-v*", "Hopper-v*", "Walker2d-v*", "Ant-v*", "Humanoid-v*"),
    presets={
        # CleanRL's batch of 2048 steps per update, collected by 8 envs x 256 steps
        # instead of 1 x 2048 (truncations bootstrap, so only the GAE horizon differs).
        "ppo": Preset(
            {
                "total_steps": 1_000_000,
                "normalize_observations": True,
                "normalize_rewards": True,
                "num_envs": 8,
                "num_steps": 256,
                "num_minibatches": 32,
                "num_epochs": 10,
                "learning_rate": 3e-4,
                "anneal_lr": True,
                "gamma": 0.99,
                "gae_lambda": 0.95,
                "clip_coef": 0.2,
                "clip_value_loss": True,
                "ent_coef": 0.0,
                "vf_coef": 0.5,
                "max_grad_norm": 0.5,
            },
            _CLEANRL_CONTINUOUS,
        ),
        # rl-zoo's MuJoCo entries (mujoco-defaults: SB3's A2C with one env and VecNormalize)
        # are not marked tuned, and their final policies swing by a thousand from seed to
        # seed (benchmarks/QUALITY.md). Its tuned settings for the PyBullet ports of these
        # robots are used instead, at the MuJoCo entries' budget (PyBullet's is 2M).
        "a2c": Preset(
            {
                **_ZOO_A2C_CONTINUOUS,
                "total_steps": 1_000_000,
                "num_envs": 4,
                "learning_rate": 9.6e-4,
            },
            f"{_ZOO_A2C} HalfCheetahBulletEnv-v0 (pybullet-defaults); budget: HalfCheetah-v4",
        ),
    },
    env_presets={
        "Humanoid-v*": {
            "a2c": Preset({"total_steps": 2_000_000}, f"{_ZOO_A2C} Humanoid-v4"),
        },
    },
)

# Atari (ALE/<Game>-v5, preprocessed by vecpg.atari). Every algorithm: one NatureCNN shared
# by actor and critic, then linear heads (shared_trunk, no hidden layers), as CleanRL and
# SB3's CnnPolicy; torch_threads=0 (all cores: sampling and the update take turns, and a CNN
# update, unlike a small MLP's, scales with threads); vector="native", ALE's own C++ vector
# env (benchmarks/ATARI.md); --vector subproc runs vecpg.atari.make_env in vecpg's workers.
_ATARI_RUN = {"vector": "native", "shared_trunk": True, "hidden_sizes": [], "torch_threads": 0}

ATARI = Family(
    name="atari",
    envs=("ALE/*", "ale_py:ALE/*"),
    presets={
        "ppo": Preset(
            {
                **_ATARI_RUN,
                "total_steps": 10_000_000,
                "num_envs": 8,
                "num_steps": 128,
                "num_minibatches": 4,
                "num_epochs": 4,
                "learning_rate": 2.5e-4,
                "anneal_lr": True,
                "optimizer": "adam",
                "optimizer_eps": 1e-5,
                "gamma": 0.99,
                "gae_lambda": 0.95,
                "clip_coef": 0.1,
                "clip_value_loss": True,
                "ent_coef": 0.01,
                "vf_coef": 0.5,
                "max_grad_norm": 0.5,
                "normalize_advantages": True,
            },
            "CleanRL cleanrl/ppo_atari.py",
        ),
        "a2c": Preset(
            {
                **_ATARI_RUN,
                "total_steps": 10_000_000,
                "num_envs": 16,
                "num_steps": 5,
                "learning_rate": 7e-4,
                "anneal_lr": False,
                # SB3 uses a TensorFlow-style RMSprop (epsilon inside the square root);
                # vecpg uses torch's.
                "optimizer": "rmsprop",
                "optimizer_eps": 1e-5,
                "gamma": 0.99,
                "advantage": "gae",
                "gae_lambda": 1.0,
                "ent_coef": 0.01,
                "vf_coef": 0.5,  # zoo 0.25 (SB3 MSE)
                "max_grad_norm": 0.5,
                "normalize_advantages": False,
            },
            "rl-zoo hyperparams/a2c.yml atari entry on SB3's A2C defaults",
        ),
    },
)

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
    """Add a family (its name must be new); ``vecpg train --env`` then finds its envs."""
    if family.name in FAMILIES or family.name in (AUTO, NONE):
        raise ValueError(f"a preset family named {family.name!r} already exists")
    FAMILIES[family.name] = family


for _family in (CLASSIC_CONTROL, CLASSIC_CONTINUOUS, BOX2D, MUJOCO, ATARI):
    register(_family)


def family_for(env: str) -> Family | None:
    """The first registered family covering ``env``, or None."""
    return next((family for family in FAMILIES.values() if family.covers(env)), None)


def preset_values(preset: str, env: str, algo: str) -> tuple[str, dict[str, Any]]:
    """``(name, values)``: the preset that applies and its settings for ``env`` and ``algo``.

    Args:
        preset: ``"auto"`` (the env's family, or none), ``"none"``, or a family name.
        env: the env id.
        algo: ``"ppo"``, ``"a2c"`` or ``"reinforce"``.

    Returns:
        The family's name and its values; ``("none", {})`` when no family covers the env
        or the family has no settings for the algorithm.

    Example:
        >>> name, values = preset_values("auto", "Acrobot-v1", "ppo")
        >>> name, values["num_envs"], values["num_steps"]
        ('classic-control', 16, 256)
        >>> preset_values("none", "Acrobot-v1", "ppo")
        ('none', {})
    """
    if preset == NONE:
        return NONE, {}
    if preset == AUTO:
        family = family_for(env)
        if family is None:
            return NONE, {}
    elif preset in FAMILIES:
        family = FAMILIES[preset]
    else:
        raise ConfigError(
            f"preset must be auto, none or one of {', '.join(FAMILIES)} (got {preset!r})"
        )
    if not family.applies(env, algo):
        return NONE, {}
    return family.name, family.values(env, algo)
