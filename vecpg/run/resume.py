"""Resuming a training run from its latest checkpoint: config overrides and log rewinding.

``vecpg train --resume RUN_DIR`` loads the newest readable checkpoint (an unreadable one
is skipped with a warning, see :func:`vecpg.run.checkpoint.load_latest`), rebuilds the config
saved in it, applies the options given on the command line where changing them mid-run
makes sense (``--total-steps`` to extend a run, ``--learning-rate``, ``--stop-at-return``,
``--device``...), and refuses the ones that would break the run (:data:`FIXED_ON_RESUME`).

The logs are then rewound to the checkpoint: a run killed between checkpoints logged
updates past its last one, and the resumed run logs those steps again, so the rows of
``metrics.csv`` and the findings of ``health.jsonl`` after the checkpoint's step are
dropped first. TensorBoard events after it are purged by
:class:`vecpg.run.tensorboard_log.TensorBoardCallback` (``purge_step``). The trainer's
``load_state_dict`` restores the policy, optimizer, normalizers, step and update counters
and RNG states; the envs restart from a fresh reset seeded past the original ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecpg.errors import ConfigError
from vecpg.run.config import FIELDS, TrainConfig, resolve_config
from vecpg.run.files import rewind_log

# Options whose change on resume would break the run, and why (shown in the error).
FIXED_ON_RESUME: dict[str, str] = {
    "env": "the policy and normalizers were trained on it",
    "env_kwargs": "they define the env the policy was trained on",
    "algo": "the checkpoint holds this algorithm's learner state",
    "seed": "the RNG states come from the checkpoint",
    "num_envs": "per-env reward statistics and action-noise keys are per env",
    "optimizer": "the checkpoint holds this optimizer's state",
    "optimizer_eps": "it is restored with the optimizer state",
    "hidden_sizes": "the checkpoint's weights have this shape",
    "activation": "the checkpoint's weights were trained with it",
    "shared_trunk": "the checkpoint's weights have this layout",
    "squash": "the policy's action distribution would change",
    "use_sde": "the checkpoint's log_std has this shape",
    "normalize_observations": "the policy expects (un)normalized observations",
    "normalize_rewards": "the critic was trained on (un)scaled rewards",
    "log_std_init": "it only sets the initial weights, which the checkpoint replaces",
    "ortho_init": "it only sets the initial weights, which the checkpoint replaces",
}


@dataclass(frozen=True)
class ResumePlan:
    """What :func:`prepare` found: the checkpoint to load and the config to resume with."""

    run_dir: Path
    checkpoint: Any  # vecpg.run.checkpoint.Checkpoint (kept Any: that module imports torch lazily)
    config: TrainConfig
    rows_dropped: int
    """metrics.csv rows logged after the checkpoint (by a run killed between checkpoints)."""


def resume_config(saved: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with ``overrides`` applied, refusing run-breaking changes.

    Args:
        saved: ``checkpoint.state["config"]`` (a plain dict of :class:`TrainConfig` fields;
            fields unknown to this version are ignored, missing ones take their defaults).
        overrides: option values from the command line or a config file.

    Raises:
        ConfigError: an option in :data:`FIXED_ON_RESUME` differs from the saved value, or
            an override is invalid (one line naming the option).

    Example:
        >>> saved = resolve_config(cli_values={"total_steps": 1000}).to_dict()
        >>> resume_config(saved, {"total_steps": 5000, "env": "CartPole-v1"}).total_steps
        5000
        >>> resume_config(saved, {"num_envs": 4})
        Traceback (most recent call last):
        ...
        vecpg.errors.ConfigError: --num-envs cannot change on --resume (saved 8, given 4): per-env reward statistics and action-noise keys are per env
    """
    known = {name: value for name, value in saved.items() if name in FIELDS}
    original = resolve_config(known)
    config = resolve_config(known, overrides)
    for name in overrides:
        name = name.replace("-", "_")
        before, after = getattr(original, name), getattr(config, name)
        if name in FIXED_ON_RESUME and before != after:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} cannot change on --resume (saved {before!r}, given {after!r}): "
                f"{FIXED_ON_RESUME[name]}"
            )
    return config


def prepare(run_dir: str | os.PathLike[str], overrides: dict[str, Any]) -> ResumePlan:
    """Load ``run_dir``'s latest readable checkpoint, resolve the config, rewind the logs.

    The caller holds the run directory (:func:`vecpg.run.run_dir.claim`): corrupt
    checkpoints are moved aside and the logs rewritten.

    Raises:
        CheckpointError: no readable checkpoint in ``run_dir``.
        ConfigError: a forbidden override, or the run already reached ``total_steps``.
    """
    from vecpg.run.checkpoint import load_latest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {str(run_dir)!r}: no such run directory")
    given_dir = overrides.get("run_dir")
    if given_dir is not None and Path(given_dir).resolve() != run_dir.resolve():
        raise ConfigError(
            f"--run-dir {given_dir!r} differs from --resume {str(run_dir)!r}; a resumed run "
            "continues in its own directory (copy it first to branch off)"
        )
    overrides = {name: value for name, value in overrides.items() if name != "run_dir"}
    checkpoint = load_latest(run_dir, move_aside=True)
    config = resume_config(checkpoint.state.get("config", {}), overrides)
    if checkpoint.step >= config.total_steps:
        raise ConfigError(
            f"the run already reached total_steps={config.total_steps:,} (checkpoint at step "
            f"{checkpoint.step:,}); pass a larger --total-steps to train it further"
        )
    # Only after every check passed: a refused resume must leave the logs untouched.
    rows_dropped = rewind_log(run_dir / "metrics.csv", checkpoint.step)
    rewind_log(run_dir / "health.jsonl", checkpoint.step)
    return ResumePlan(run_dir, checkpoint, config, rows_dropped)
