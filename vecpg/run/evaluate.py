"""Evaluate a saved policy: exactly N complete episodes on fresh, separately seeded envs.

A checkpoint (or the latest readable one of a run directory, see
:func:`vecpg.run.checkpoint.load_any`) is turned back into the policy it was trained as: the
saved config rebuilds the :class:`~vecpg.policies.ActorCritic` and, where the run
normalized observations, the :class:`~vecpg.normalization.ObservationNormalizer` with the
saved statistics, frozen (evaluation never updates them: the policy must see inputs
scaled exactly as at the checkpoint).

Episodes run on a vector env of ``E`` envs (the run's kind: vecpg's subprocess env or
Gymnasium's sync env) built by :func:`vecpg.run.env_factory.make_vector_env`, so ``module:Class``
envs work as in training. Counting episodes without bias: stopping at the first N
episodes to finish *in time* would over-represent short episodes (an env whose episodes
are short finishes more of them before the long ones end). Instead each env ``i`` gets a
fixed quota ``q_i = N // E + (1 if i < N % E else 0)`` (the quotas sum to N) and only its
first ``q_i`` episodes count, whatever their length; envs that met their quota keep
stepping but are ignored. ``E`` is capped at N so no env idles from the start.

Seeds: env ``i`` is reset once with ``seed + i`` and autoresets from its own generator
afterwards. The default seed is the training seed plus :data:`EVAL_SEED_OFFSET`, far from
the seeds training resets its envs with (``seed + update * num_envs + i``). The stochastic
policy samples from a torch generator forked from the global one and seeded with ``seed``,
so evaluation is reproducible and leaves the caller's RNG untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from vecpg.atari import is_atari_id
from vecpg.buffer import map_structure
from vecpg.errors import CheckpointError, ConfigError
from vecpg.normalization import ObservationNormalizer
from vecpg.policies import ActorCritic
from vecpg.run.checkpoint import Checkpoint, load_any
from vecpg.run.config import FIELDS, TrainConfig, resolve_config
from vecpg.run.env_factory import env_factory, make_vector_env
from vecpg.run.trainer import build_policy, resolve_device

#: Added to the training seed for the default evaluation seed (see the module docstring).
EVAL_SEED_OFFSET = 1_000_000_000


@dataclass
class LoadedPolicy:
    """A policy rebuilt from a checkpoint, in eval mode, with its frozen normalizer."""

    policy: ActorCritic
    observation_normalizer: ObservationNormalizer | None
    config: TrainConfig
    checkpoint: Checkpoint
    device: torch.device

    @torch.no_grad()
    def actions(self, observations: Any, *, deterministic: bool) -> np.ndarray:
        """Env actions ``[B, ...]`` for numpy observations ``[B, ...]`` (mode or a sample)."""
        tensors = map_structure(
            lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(self.device),
            observations,
        )
        if self.observation_normalizer is not None:
            tensors = self.observation_normalizer(tensors, update=False)
        if deterministic:
            chosen = self.policy.act_deterministic(tensors)
        else:
            chosen = self.policy.distribution(tensors).sample()
        return self.policy.to_env_actions(chosen)


def _saved_config(checkpoint: Checkpoint) -> TrainConfig:
    saved = checkpoint.state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {checkpoint.path} has no saved config to rebuild from")
    # Keys of a newer/older vecpg that this one does not know cannot affect the policy.
    known = {name: value for name, value in saved.items() if name in FIELDS}
    try:
        return resolve_config(file_values=known)
    except ConfigError as error:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds an invalid config ({error})"
        ) from None


def load_policy(source: str | os.PathLike[str], *, device: str = "cpu") -> LoadedPolicy:
    """Rebuild the policy (and observation normalizer) of a checkpoint or run directory.

    Args:
        source: a run directory (its latest readable checkpoint is used, older ones as a
            fallback) or a ``.pt`` checkpoint file (used as given, never replaced).
        device: ``cpu``, ``cuda`` or ``auto``.

    Raises:
        CheckpointError: missing/corrupt checkpoint, or one that does not fit its config.
        ConfigError: the run's env cannot be created here, or the device is unavailable.
    """
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: give a run directory or a .pt checkpoint")
    checkpoint = load_any(path)
    config = _saved_config(checkpoint)
    torch_device = resolve_device(device)
    factory, _ = env_factory(config.env, config.env_kwargs)
    try:
        probe = factory()
    except gym.error.Error as error:
        raise ConfigError(
            f"env {config.env!r} of the checkpoint cannot be created: {error}"
        ) from None
    try:
        observation_space, action_space = probe.observation_space, probe.action_space
    finally:
        probe.close()
    normalizer = None
    if config.normalize_observations:
        normalizer = ObservationNormalizer(observation_space, torch_device)
        saved_statistics = checkpoint.state.get("observation_normalizer")
        if not saved_statistics:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} was trained with normalize_observations but "
                "holds no normalizer statistics"
            )
        try:
            normalizer.load_state_dict(saved_statistics)
        except (KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} has unusable normalizer statistics ({error!r})"
            ) from None
    # The layers' default init draws from torch's global RNG; fork it so loading a policy
    # does not shift the caller's random stream (the weights are overwritten anyway).
    with torch.random.fork_rng(devices=[]):
        policy = build_policy(config, observation_space, action_space, ortho_init=False)
    try:
        policy.load_state_dict(checkpoint.state["policy"])
    except (RuntimeError, KeyError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit its config: {first_line}"
        ) from None
    policy.to(torch_device).eval()
    return LoadedPolicy(policy, normalizer, config, checkpoint, torch_device)


@dataclass(frozen=True)
class EpisodeStats:
    """Returns and lengths of the evaluated episodes, in env order (env 0's first).

    Example:
        >>> stats = EpisodeStats("deterministic", (1.0, 3.0), (10, 30))
        >>> stats.summary()["return_mean"], stats.summary()["length_std"]
        (2.0, 10.0)
    """

    mode: str
    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    def summary(self) -> dict[str, Any]:
        """Count, mean, std (population, as SB3's evaluate_policy), min, max, per-episode lists."""
        result: dict[str, Any] = {"episodes": len(self.returns)}
        for name, values in (("return", self.returns), ("length", self.lengths)):
            array = np.asarray(values, dtype=np.float64)
            result[f"{name}_mean"] = float(array.mean())
            result[f"{name}_std"] = float(array.std())
            # lengths are step counts: their extremes stay ints in the JSON line
            kind = float if name == "return" else int
            result[f"{name}_min"] = kind(array.min())
            result[f"{name}_max"] = kind(array.max())
        result["returns"] = [float(value) for value in self.returns]
        result["lengths"] = [int(value) for value in self.lengths]
        return result

    def format(self) -> str:
        """One line: ``mode: return mean ± std (min .., max ..), length ...``."""
        s = self.summary()
        return (
            f"{self.mode + ':':<14} return {s['return_mean']:.2f} ± {s['return_std']:.2f} "
            f"(min {s['return_min']:.2f}, max {s['return_max']:.2f}), "
            f"length {s['length_mean']:.1f} ± {s['length_std']:.1f} "
            f"(min {s['length_min']:.0f}, max {s['length_max']:.0f})"
        )


def episode_quotas(num_episodes: int, num_envs: int) -> np.ndarray:
    """Episodes each env must contribute: ``N // E`` each, the first ``N % E`` envs one more.

    >>> episode_quotas(10, 4).tolist()
    [3, 3, 2, 2]
    """
    quotas = np.full(num_envs, num_episodes // num_envs, dtype=np.int64)
    quotas[: num_episodes % num_envs] += 1
    return quotas


@contextlib.contextmanager
def _seeded_torch_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch for the block only; the caller's RNG state is restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def run_episodes(
    loaded: LoadedPolicy,
    num_episodes: int,
    *,
    seed: int,
    num_envs: int = 4,
    deterministic: bool = True,
    vector: str | None = None,
) -> EpisodeStats:
    """Run the policy for exactly ``num_episodes`` complete episodes (see module docstring).

    Args:
        loaded: from :func:`load_policy`.
        num_episodes: N, at least 1.
        seed: env ``i`` is reset with ``seed + i``; also seeds action sampling.
        num_envs: parallel envs E (capped at N).
        deterministic: the distribution's mode (argmax / mean) instead of a sample.
        vector: ``subproc``, ``sync`` or ``native``; default the run's.
    """
    if num_episodes < 1:
        raise ConfigError(f"episodes must be >= 1 (got {num_episodes})")
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1 (got {num_envs})")
    if vector not in (None, "subproc", "sync", "native"):
        raise ConfigError(f"vector must be subproc, sync or native (got {vector!r})")
    num_envs = min(num_envs, num_episodes)
    config = dataclasses.replace(
        loaded.config, num_envs=num_envs, num_workers=None, vector=vector or loaded.config.vector
    )
    quotas = episode_quotas(num_episodes, num_envs)
    counts = np.zeros(num_envs, dtype=np.int64)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    lengths: list[list[int]] = [[] for _ in range(num_envs)]
    # Any: episode_ended/episode_returns/episode_lengths are vecpg's fast-path attributes,
    # present on SubprocVectorEnv and the sync adapter but not on the VectorEnv type.
    env: Any = make_vector_env(config)
    try:
        with _seeded_torch_rng(loaded.device, seed):
            observations, _ = env.reset(seed=seed)
            while (counts < quotas).any():
                actions = loaded.actions(observations, deterministic=deterministic)
                observations, *_ = env.step(actions)
                for index in np.flatnonzero(env.episode_ended & (counts < quotas)):
                    returns[index].append(float(env.episode_returns[index]))
                    lengths[index].append(int(env.episode_lengths[index]))
                    counts[index] += 1
    finally:
        env.close()
    mode = "deterministic" if deterministic else "stochastic"
    return EpisodeStats(
        mode,
        tuple(value for per_env in returns for value in per_env),
        tuple(value for per_env in lengths for value in per_env),
    )


@dataclass(frozen=True)
class VideoResult:
    """Video files written, or why none were (``skipped`` is a one-line reason)."""

    paths: tuple[Path, ...] = ()
    skipped: str | None = None

    def format(self) -> str:
        if self.skipped is not None:
            return f"video: skipped: {self.skipped}"
        return "video: wrote " + ", ".join(str(path) for path in self.paths)


def _make_render_env(spec: str, env_kwargs: dict[str, Any]) -> gym.Env | str:
    """A single env rendering rgb_array, or the reason there cannot be one."""
    kwargs = dict(env_kwargs)
    if is_atari_id(spec):
        kwargs["terminal_on_life_loss"] = False  # one video per game, not per life
    factory, _ = env_factory(spec, kwargs)
    try:
        env = factory(render_mode="rgb_array")
    except TypeError:
        return f"env {spec!r} does not take render_mode='rgb_array'"
    except gym.error.Error as error:
        return f"env {spec!r} cannot render rgb_array ({error})"
    modes = env.metadata.get("render_modes", [])
    if env.render_mode != "rgb_array" or "rgb_array" not in modes:
        env.close()
        return f"env {spec!r} cannot render rgb_array (render modes: {list(modes)})"
    return env


def record_video(
    loaded: LoadedPolicy,
    directory: str | os.PathLike[str],
    *,
    episodes: int = 1,
    seed: int,
    deterministic: bool = True,
) -> VideoResult:
    """Record ``episodes`` episodes of the policy with Gymnasium's RecordVideo.

    Runs in one in-process env made with ``render_mode="rgb_array"``. Never raises for a
    missing moviepy or an env that cannot render: returns a :class:`VideoResult` whose
    ``skipped`` says why, so the evaluation itself still runs.
    """
    made = _make_render_env(loaded.config.env, loaded.config.env_kwargs)
    if isinstance(made, str):
        return VideoResult(skipped=made)
    # Checked before RecordVideo, which creates the folder before it looks for moviepy.
    if importlib.util.find_spec("moviepy") is None:
        made.close()
        return VideoResult(skipped="moviepy is not installed (pip install 'vecpg[video]')")
    directory = Path(directory)
    before = set(directory.glob("*.mp4")) if directory.is_dir() else set()
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", loaded.config.env).strip("-")
    prefix = f"{prefix}-step{loaded.checkpoint.step}"
    try:
        env = gym.wrappers.RecordVideo(
            made, str(directory), episode_trigger=lambda _: True, name_prefix=prefix
        )
    except gym.error.DependencyNotInstalled as error:  # moviepy present but broken
        made.close()
        return VideoResult(skipped=str(error))
    try:
        with _seeded_torch_rng(loaded.device, seed):
            for episode in range(episodes):
                observation, _ = env.reset(seed=seed if episode == 0 else None)
                done = False
                while not done:
                    batch = map_structure(lambda array: np.asarray(array)[None], observation)
                    action = loaded.actions(batch, deterministic=deterministic)[0]
                    observation, _, terminated, truncated, _ = env.step(action)
                    done = bool(terminated or truncated)
    finally:
        env.close()
    return VideoResult(paths=tuple(sorted(set(directory.glob("*.mp4")) - before)))


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``vecpg eval`` prints: the checkpoint, seed and per-mode statistics."""

    checkpoint: Path
    step: int
    env: str
    seed: int
    num_envs: int
    results: tuple[EpisodeStats, ...]
    video: VideoResult | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "env": self.env,
            "seed": self.seed,
            "num_envs": self.num_envs,
        }
        for stats in self.results:
            data[stats.mode] = stats.summary()
        if self.video is not None:
            data["video"] = [str(path) for path in self.video.paths]
            data["video_skipped"] = self.video.skipped
        return data

    def format(self) -> str:
        episodes = len(self.results[0].returns)
        lines = [
            f"vecpg eval: {self.env}, {self.checkpoint} (step {self.step:,}): {episodes} "
            f"episodes on {self.num_envs} envs, seed {self.seed}"
        ]
        lines += ["  " + stats.format() for stats in self.results]
        if self.video is not None:
            lines.append("  " + self.video.format())
        return "\n".join(lines)


def evaluate(
    source: str | os.PathLike[str],
    episodes: int,
    *,
    seed: int | None = None,
    num_envs: int = 4,
    device: str = "cpu",
    stochastic: bool = False,
    vector: str | None = None,
    video_dir: str | os.PathLike[str] | None = None,
    video_episodes: int = 1,
    on_loaded: Callable[[LoadedPolicy], None] | None = None,
) -> EvaluationReport:
    """Evaluate the deterministic policy (and, with ``stochastic``, the sampling one).

    Args:
        source: run directory or ``.pt`` checkpoint.
        episodes: N complete episodes per mode.
        seed: env seed (default: the training seed + :data:`EVAL_SEED_OFFSET`).
        num_envs: parallel envs (capped at N).
        device: torch device for the policy.
        stochastic: also evaluate the sampling policy, on the same env seeds.
        vector: ``subproc``, ``sync`` or ``native`` (default: the run's).
        video_dir: record ``video_episodes`` deterministic episodes there (skipped with a
            reason when moviepy or rgb_array rendering is missing).
        on_loaded: called with the loaded policy before any episode runs (the CLI uses it
            to apply the run's torch thread count).

    Example:
        ``evaluate("runs/CartPole-v1__ppo__1__20250101-120000", 10).format()``
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1 (got {episodes})")
    if video_episodes < 1:
        raise ConfigError(f"video_episodes must be >= 1 (got {video_episodes})")
    loaded = load_policy(source, device=device)
    if on_loaded is not None:
        on_loaded(loaded)
    if seed is None:
        seed = loaded.config.seed + EVAL_SEED_OFFSET
    if seed < 0:
        raise ConfigError(f"seed must be >= 0 (got {seed})")
    modes = (True, False) if stochastic else (True,)
    results = tuple(
        run_episodes(
            loaded,
            episodes,
            seed=seed,
            num_envs=num_envs,
            deterministic=deterministic,
            vector=vector,
        )
        for deterministic in modes
    )
    video = None
    if video_dir is not None:
        video = record_video(loaded, video_dir, episodes=video_episodes, seed=seed)
    return EvaluationReport(
        checkpoint=loaded.checkpoint.path,
        step=loaded.checkpoint.step,
        env=loaded.config.env,
        seed=seed,
        num_envs=min(num_envs, episodes),
        results=results,
        video=video,
    )


__all__ = [
    "EVAL_SEED_OFFSET",
    "EpisodeStats",
    "EvaluationReport",
    "LoadedPolicy",
    "VideoResult",
    "episode_quotas",
    "evaluate",
    "load_policy",
    "record_video",
    "run_episodes",
]
