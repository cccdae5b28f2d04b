"""The training loop: build env, policy, buffer and learner from a config; sample, update, repeat.

Each iteration collects a ``[T, N]`` rollout (T = ``num_steps`` steps of N = ``num_envs``
envs), runs one learner update on it and hands a metrics row to the callbacks. Callbacks
are plain objects with any of ``on_start(trainer)``, ``on_update(trainer, row)`` and
``on_end(trainer, summary)``; :class:`vecpg.run.metrics.MetricsCSV` writes the rows to disk,
other modules (checkpoints, progress, health, TensorBoard) plug in the same way. A row
holds the learner's metrics, the wall time of the rollout and of the update
(``sampling_time_s``, ``update_time_s``) and, on CUDA, the peak GPU memory
(``gpu_memory_mib``).
"""

from __future__ import annotations

import datetime
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from vecpg.buffer import RolloutBuffer
from vecpg.errors import CheckpointError, ConfigError
from vecpg.learners import make_learner
from vecpg.normalization import ObservationNormalizer, RewardScaler, normalized_space
from vecpg.policies import ActorCritic
from vecpg.run.config import TrainConfig, config_file_text
from vecpg.run.env_factory import env_spaces, make_vector_env
from vecpg.run.metrics import process_time_s
from vecpg.run.run_dir import create_unique
from vecpg.run.stop_signals import stop_signals_deferred
from vecpg.sampler import Sampler


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def make_sampler(
    config: TrainConfig,
    policy: Any,
    buffer: RolloutBuffer,
    observation_normalizer: ObservationNormalizer | None,
    reward_scaler: RewardScaler | None,
) -> Any:
    """The sampler that fills ``buffer``: a local :class:`Sampler` or, with ``backend="ray"``,
    a started :class:`vecpg.distributed.RaySampler` (same interface: ``reset``, ``collect``,
    ``global_step``, ``episodes``, ``close``)."""
    if config.backend == "ray":
        from vecpg.distributed import RaySampler

        return RaySampler(config).start(
            policy,
            buffer,
            observation_normalizer=observation_normalizer,
            reward_scaler=reward_scaler,
        )
    return Sampler(
        make_vector_env(config),
        policy,
        buffer,
        observation_normalizer=observation_normalizer,
        reward_scaler=reward_scaler,
        overlap=config.overlap_inference,
    )


def default_run_dir(config: TrainConfig) -> Path:
    """Create ``runs/<env>__<algo>__<seed>__<YYYYmmdd-HHMMSS>`` (env made filesystem-safe).

    The directory is created here, atomically: a second run with the same env, algorithm
    and seed started in the same second gets ``...-2`` (see
    :func:`vecpg.run.run_dir.create_unique`), never the first run's directory.
    """
    env = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.env).strip("-")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return create_unique(Path("runs") / f"{env}__{config.algo}__{config.seed}__{stamp}")


def write_config(config: TrainConfig, run_dir: Path) -> Path:
    """Save the resolved config as config.yaml (config.json without PyYAML)."""
    name, text = config_file_text(config)
    path = run_dir / name
    path.write_text(text)
    return path


def build_policy(
    config: TrainConfig,
    observation_space: gym.Space,
    action_space: gym.Space,
    *,
    ortho_init: bool,
) -> ActorCritic:
    """The policy network that ``config`` describes, for the env's spaces (the network sees
    the normalized space when ``config.normalize_observations``). The one place where
    config fields become network options: training and evaluation build the same network,
    so a checkpoint's weights fit. ``ortho_init`` is False where weights are loaded next.

    Example:
        >>> from vecpg.run.config import resolve_config
        >>> config = resolve_config(cli_values={"env": "CartPole-v1", "hidden_sizes": [32]})
        >>> box, two = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)
        >>> policy = build_policy(config, box, two, ortho_init=False)
        >>> sum(parameter.numel() for parameter in policy.parameters())  # actor 226, critic 193
        419
    """
    return ActorCritic(
        normalized_space(observation_space) if config.normalize_observations else observation_space,
        action_space,
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        shared_trunk=config.shared_trunk,
        squash=config.squash,
        log_std_init=config.log_std_init,
        use_sde=config.use_sde,
        sde_sample_freq=config.sde_sample_freq,
        ortho_init=ortho_init,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``config.algo`` on ``config.env``; see the module docstring.

    Args:
        config: a validated :class:`TrainConfig`.
        run_dir: output directory; default ``config.run_dir`` or :func:`default_run_dir`.
        callbacks: objects with optional ``on_start``/``on_update``/``on_end`` methods.

    The env is closed when :meth:`train` returns or raises; :meth:`close` closes it
    without training. ``state_dict()`` stays usable after training.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path | None = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.total_steps = config.total_steps
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self._build()
        self.run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, self.run_dir)
        self.update = 0
        self.stop_reason: str | None = None
        self._needs_reset = True

    def _build(self) -> None:
        config = self.config
        self.observation_space, self.action_space = env_spaces(config.env, config.env_kwargs)
        self.observation_normalizer = None
        if config.normalize_observations:
            try:
                self.observation_normalizer = ObservationNormalizer(
                    self.observation_space, self.device
                )
            except ValueError as error:
                raise ConfigError(f"normalize_observations: {error}") from None
        self.policy = build_policy(
            config, self.observation_space, self.action_space, ortho_init=config.ortho_init
        ).to(self.device)
        self.reward_scaler = (
            RewardScaler(config.num_envs, config.gamma, self.device)
            if config.normalize_rewards
            else None
        )
        self.buffer = RolloutBuffer(
            self.policy.observation_space,
            self.action_space,
            config.num_steps,
            config.num_envs,
            self.device,
        )
        self.learner = make_learner(self.policy, config)
        # Last: the sampler starts worker processes (or Ray actors) that must not outlive a
        # failure in building anything else.
        self.sampler = make_sampler(
            config, self.policy, self.buffer, self.observation_normalizer, self.reward_scaler
        )

    @property
    def global_step(self) -> int:
        """Env steps taken so far, summed over envs."""
        return self.sampler.global_step

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the loop to stop after the current update (for callbacks)."""
        self.stop_reason = reason

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    def _row(self, metrics: dict[str, float], train_start: float) -> dict[str, Any]:
        elapsed = time.perf_counter() - train_start
        return {
            "global_step": self.global_step,
            "time_s": process_time_s(),
            "sps": (self.global_step - self._start_step) / max(elapsed, 1e-9),
            "episode_return_mean": self.sampler.episodes.return_mean(),
            "episode_length_mean": self.sampler.episodes.length_mean(),
            "update": self.update,
            "episodes_finished": self.sampler.episodes.finished,
            **metrics,
        }

    def train(self) -> dict[str, Any]:
        """Train until ``total_steps``, ``stop_at_return`` or :meth:`request_stop`.

        Returns:
            The summary: global_step, updates, time_s (since the process started),
            train_time_s, sps, episode_return_mean, episode_length_mean,
            episodes_finished, stop_reason, run_dir.
        """
        config = self.config
        train_start = time.perf_counter()
        self._start_step = self.global_step
        self.stop_reason = None
        try:
            self._call("on_start")
            if self._needs_reset:
                # A resumed run must not replay the first episodes' seeds.
                self.sampler.reset(seed=config.seed + self.update * config.num_envs)
                self._needs_reset = False
            while self.global_step < self.total_steps and self.stop_reason is None:
                self.learner.set_progress(self.global_step / self.total_steps)
                sampling_start = time.perf_counter()
                self.sampler.collect()
                with stop_signals_deferred():  # a stop lands between updates, never inside
                    update_start = time.perf_counter()
                    metrics = self.learner.update(self.buffer)
                    metrics["sampling_time_s"] = update_start - sampling_start
                    metrics["update_time_s"] = time.perf_counter() - update_start
                    if self.device.type == "cuda":
                        metrics["gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
                    self.update += 1
                    row = self._row(metrics, train_start)
                    self._call("on_update", row)
                if (
                    config.stop_at_return is not None
                    and row["episode_return_mean"] >= config.stop_at_return
                ):
                    self.stop_reason = "stop_at_return"
            if self.stop_reason is None:
                self.stop_reason = "total_steps"
            summary = self._summary(train_start)
            self._call("on_end", summary)
            return summary
        except BaseException as error:
            self.stop_reason = f"error: {type(error).__name__}"
            try:  # let callbacks finish their output; the original error is what matters
                self._call("on_end", self._summary(train_start))
            except Exception:
                pass
            raise
        finally:
            self.close()

    def _summary(self, train_start: float) -> dict[str, Any]:
        train_time = time.perf_counter() - train_start
        return {
            "global_step": self.global_step,
            "updates": self.update,
            "time_s": process_time_s(),
            "train_time_s": train_time,
            "sps": (self.global_step - self._start_step) / max(train_time, 1e-9),
            "episode_return_mean": self.sampler.episodes.return_mean(),
            "episode_length_mean": self.sampler.episodes.length_mean(),
            "episodes_finished": self.sampler.episodes.finished,
            "stop_reason": self.stop_reason,
            "run_dir": str(self.run_dir),
        }

    def close(self) -> None:
        """Close the sampler and its envs (idempotent)."""
        self.sampler.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: policy, optimizer, normalizers, counters, RNG, config."""
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "policy": self.policy.state_dict(),
            "learner": self.learner.state_dict(),
            "observation_normalizer": (
                self.observation_normalizer.state_dict() if self.observation_normalizer else None
            ),
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
            "global_step": self.global_step,
            "update": self.update,
            "episodes": self.sampler.episodes.state_dict(),
            "rng": rng,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the envs restart from a fresh reset).

        Raises:
            CheckpointError: the state belongs to a different algorithm or network shape.
        """
        saved = state.get("config", {})
        for name in (
            "algo",
            "hidden_sizes",
            "shared_trunk",
            "squash",
            "use_sde",
            "normalize_observations",
        ):
            if name in saved and saved[name] != getattr(self.config, name):
                raise CheckpointError(
                    f"checkpoint has {name}={saved[name]!r} but this run has "
                    f"{name}={getattr(self.config, name)!r}; use the same setting to resume"
                )
        try:
            self.policy.load_state_dict(state["policy"])
            self.learner.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint does not fit this run: {first_line}") from None
        if self.observation_normalizer is not None and state.get("observation_normalizer"):
            self.observation_normalizer.load_state_dict(state["observation_normalizer"])
        if self.reward_scaler is not None and state.get("reward_scaler"):
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.sampler.global_step = int(state["global_step"])
        self.update = int(state["update"])
        self.sampler.episodes.load_state_dict(state.get("episodes", {}))
        rng = state.get("rng", {})
        if "python" in rng:
            random.setstate(rng["python"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
