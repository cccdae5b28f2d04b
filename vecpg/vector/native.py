"""Env families' own C++ vector envs (``--vector native``), with vecpg's fast-path attributes.

Atari: ``ale_py.AtariVectorEnv`` steps ``N`` games on a thread pool inside this process
and does the DeepMind preprocessing in C++. :func:`make_native_vector_env` configures it
as :func:`vecpg.atari.make_env` configures one game (no-op starts, frame skip with max
pooling, 84x84 grayscale, FIRE on reset, 4-frame stack, no sticky actions) and
:class:`AtariGameStatistics` adds what the sampler reads, with the same meaning as for
vecpg's workers: a lost life ends the training episode (``life_loss_info``) while the
reported episode is the whole game, with its raw score; rewards are sign-clipped for the
learner here, after the raw score is summed. Two differences from ``make_env``: ALE's
vector env does not press FIRE after a lost life (only after a reset), and game lengths
count agent steps only, not the no-op/FIRE steps of the resets.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vecpg.atari import is_atari_id, require_ale
from vecpg.errors import ConfigError
from vecpg.vector.gymnasium_adapter import GymnasiumVectorAdapter

# make_env's options -> AtariVectorEnv's
_ATARI_OPTIONS = {
    "noop_max": "noop_max",
    "frame_skip": "frameskip",
    "frame_stack": "stack_num",
    "terminal_on_life_loss": "life_loss_info",
    "fire_on_reset": "use_fire_reset",
    "repeat_action_probability": "repeat_action_probability",
}


class AtariGameStatistics(GymnasiumVectorAdapter):
    """Game scores, final observations and clipped rewards on ``ale_py.AtariVectorEnv``.

    The wrapped env runs in SAME_STEP autoreset mode with ``life_loss_info=True`` (a lost
    life terminates, the game goes on) and unclipped rewards. A termination ends the game
    when the lives did not go down (the game restarted, or it has no lives, as Pong);
    a truncation always does.

    Attributes (each ``[N]``, valid until the next step): ``episode_ended``,
    ``episode_returns`` (raw game score), ``episode_lengths`` (agent steps),
    ``has_final_observation``, and ``final_observations`` ``[N, ...]``.
    """

    def __init__(self, env: gym.vector.VectorEnv, clip_rewards: bool = True) -> None:
        super().__init__(env, own_statistics=False)
        self.clip_rewards = clip_rewards
        self._lives = np.zeros(env.num_envs, dtype=np.int64)

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        observations, infos = super().reset(seed=seed, options=options)
        self._lives[:] = infos["lives"]
        return observations, infos

    def step(self, actions: Any) -> Any:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        lives = infos["lives"]
        game_over = truncations | (terminations & (lives >= self._lives))
        self._lives[:] = lives
        self._count_episodes(rewards, game_over)
        ended = terminations | truncations
        self.has_final_observation[:] = ended
        self.final_observations = infos["final_obs"] if ended.any() else observations
        if self.clip_rewards:
            rewards = np.sign(rewards)
        return observations, rewards, terminations, truncations, infos


def make_native_vector_env(
    spec: str, num_envs: int, env_kwargs: dict[str, Any] | None = None
) -> gym.vector.VectorEnv:
    """The env family's own vector env for ``spec`` (Atari ids only, for now).

    Args:
        spec: an Atari id (``ALE/Pong-v5``).
        num_envs: N.
        env_kwargs: :func:`vecpg.atari.make_env`'s preprocessing options.

    Raises:
        ConfigError: no native vector env for this env, or an option it cannot take.
    """
    if not is_atari_id(spec):
        raise ConfigError(
            f"vector native needs an env family with its own vector env (Atari: ALE/<Game>-v5); "
            f"{spec!r} has none, use vector subproc or sync"
        )
    require_ale()
    import ale_py

    env_id = spec.removeprefix("ale_py:")
    options = dict(env_kwargs or {})
    clip_rewards = bool(options.pop("clip_rewards", True))
    screen_size = options.pop("screen_size", 84)
    native: dict[str, Any] = {"img_height": screen_size, "img_width": screen_size}
    for name, value in options.items():
        if name not in _ATARI_OPTIONS:
            raise ConfigError(
                f"env_kwargs {name!r} is not available with vector native; "
                f"use vector subproc (native takes {', '.join(sorted(_ATARI_OPTIONS))})"
            )
        if value is not None:
            native[_ATARI_OPTIONS[name]] = value
    native.setdefault("life_loss_info", True)
    native.setdefault("repeat_action_probability", 0.0)
    game = gym.spec(env_id).kwargs["game"]
    env = ale_py.AtariVectorEnv(
        game, num_envs, autoreset_mode="SameStep", reward_clipping=False, **native
    )
    return AtariGameStatistics(env, clip_rewards=clip_rewards)
