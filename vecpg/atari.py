"""Atari games with the DeepMind preprocessing, as one picklable env constructor.

:func:`make_env` builds what ``vecpg train --env ALE/<Game>-v5`` runs in each worker:
numpy and Gymnasium only (no torch), so worker processes can unpickle it. The pipeline,
innermost first, and why each step is there:

1. ``gym.make(env_id, frameskip=1, repeat_action_probability=0.0)``: the raw emulator.
   Frame skipping moves to step 2, where the last two frames can be max-pooled. Sticky
   actions are off (``repeat_action_probability=0``) because the scores published for
   PPO and A2C (CleanRL's ``ppo_atari``, SB3 / rl-zoo) are measured without them; pass
   ``repeat_action_probability=0.25`` for the Machado et al. (2018) protocol.
2. Gymnasium's ``AtariPreprocessing``: up to ``noop_max=30`` no-op actions after each game
   reset (random start states), ``frame_skip=4`` with a max over the last two frames
   (some sprites flicker on alternate frames), 84x84 grayscale ``uint8``.
3. Gymnasium's ``RecordEpisodeStatistics``: the true game score (unclipped rewards) and
   length (agent steps), in ``info["episode"]`` when the game ends. It sits below the
   wrappers that end training episodes early or clip rewards, so those never change
   what metrics, progress lines and ``vecpg eval`` report. vecpg's vector envs report
   these statistics instead of their own sums whenever an env has this wrapper
   (see :func:`workers.episode_statistics.reports_own_statistics`).
4. :class:`EpisodicLife` (``terminal_on_life_loss=True``): a lost life ends the *training*
   episode (the value target stops there, which speeds up learning in most games) while
   the game goes on; the next ``reset`` continues the same game. Gymnasium's
   ``AtariPreprocessing(terminal_on_life_loss=True)`` would restart the whole game at
   every lost life instead, so it is not used for this.
5. :class:`FireOnReset`: games whose second action is FIRE and that wait for it (Breakout)
   get FIRE after every reset and after every lost life, so a policy that has not yet
   learned to fire (or a deterministic one that never does) does not stall until the
   time limit.
6. ``TransformReward(sign)`` (``clip_rewards=True``): rewards -1, 0 or +1 for learning,
   so one learning rate fits every game; the raw score is still reported (step 3).
7. Gymnasium's ``FrameStackObservation`` (``frame_stack=4``): observations
   ``[4, 84, 84]`` ``uint8``, the last four frames, so the policy sees motion.

Example:
    >>> env = make_env("ALE/Breakout-v5")  # doctest: +SKIP
    >>> env.observation_space.shape, env.observation_space.dtype  # doctest: +SKIP
    ((4, 84, 84), dtype('uint8'))
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from vecpg.errors import ConfigError

ATARI_EXTRA_HINT = "install the atari extra: pip install 'vecpg[atari]'"


def is_atari_id(spec: str) -> bool:
    """Whether ``spec`` names an Arcade Learning Environment game (``ALE/Pong-v5``, with or
    without the ``ale_py:`` prefix); those get :func:`make_env`'s preprocessing.

    Example:
        >>> is_atari_id("ALE/Pong-v5"), is_atari_id("ale_py:ALE/Pong-v5"), is_atari_id("Pong")
        (True, True, False)
    """
    return spec.removeprefix("ale_py:").startswith("ALE/")


def require_ale() -> None:
    """Import ale-py and register its ``ALE/`` ids, or raise a ConfigError naming the extra."""
    try:
        import ale_py
    except ImportError:
        raise ConfigError(f"Atari envs need ale-py; {ATARI_EXTRA_HINT}") from None
    gym.register_envs(ale_py)


class EpisodicLife(gym.Wrapper):
    """End the training episode when a life is lost; ``reset`` then continues the game.

    After a lost life, ``reset`` takes one no-op step instead of resetting the emulator
    (as the DeepMind and SB3 ``EpisodicLifeEnv`` do); only when the game is over does it
    reset for real (with its seed and options).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return observation, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if self.game_over:
            observation, info = self.env.reset(seed=seed, options=options)
        else:
            observation, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                observation, info = self.env.reset(seed=seed, options=options)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
        return observation, info


class FireOnReset(gym.Wrapper):
    """Press FIRE (then action 2, as SB3's ``FireResetEnv``) after every reset, and FIRE
    after a lost life that does not end the episode (without :class:`EpisodicLife`)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.env.reset(seed=seed, options=options)
        for action in (1, 2):
            observation, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                observation, info = self.env.reset(seed=seed, options=options)
        self.lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
        return observation, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
        if lives < self.lives and not (terminated or truncated):
            observation, fire_reward, terminated, truncated, info = self.env.step(1)
            reward = float(reward) + float(fire_reward)
        self.lives = lives
        return observation, reward, terminated, truncated, info


def sign(reward: SupportsFloat) -> float:
    """-1.0, 0.0 or 1.0: the reward's sign (a named function, so envs stay picklable)."""
    return float(np.sign(float(reward)))


def needs_fire(env: gym.Env) -> bool:
    """Whether the game waits for FIRE to start (its second action is FIRE)."""
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def make_env(
    env_id: str,
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    screen_size: int = 84,
    terminal_on_life_loss: bool = True,
    fire_on_reset: bool | None = None,
    clip_rewards: bool = True,
    frame_stack: int = 4,
    repeat_action_probability: float = 0.0,
    **make_kwargs: Any,
) -> gym.Env:
    """An Atari env with the DeepMind preprocessing (see the module docstring for each step).

    Args:
        env_id: an ALE id, e.g. ``"ALE/Pong-v5"``.
        noop_max: at most this many no-op actions after a game reset (0: none).
        frame_skip: emulator frames per agent step, max-pooled over the last two.
        screen_size: side of the square grayscale observation, in pixels.
        terminal_on_life_loss: a lost life ends the training episode (not the game).
        fire_on_reset: press FIRE after reset; None: for games that need it.
        clip_rewards: rewards as their sign; the raw score stays in ``info["episode"]``.
        frame_stack: frames per observation (1: no stacking, observations ``[84, 84]``).
        repeat_action_probability: sticky actions (0: off).
        **make_kwargs: further ``gym.make`` arguments (``mode``, ``difficulty``,
            ``render_mode``, ``full_action_space`` ...).

    Returns:
        The env: observations ``[frame_stack, screen_size, screen_size]`` ``uint8``
        (0..255), Discrete actions, float rewards.

    Raises:
        ConfigError: ale-py is missing, or ``env_id`` is no ALE id.
    """
    require_ale()
    if env_id not in gym.envs.registry:
        raise ConfigError(f"unknown Atari env id {env_id!r}: use ALE/<Game>-v5, e.g. ALE/Pong-v5")
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=repeat_action_probability,
        **make_kwargs,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=noop_max, frame_skip=frame_skip, screen_size=screen_size
    )
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if terminal_on_life_loss:
        env = EpisodicLife(env)
    if fire_on_reset if fire_on_reset is not None else needs_fire(env):
        env = FireOnReset(env)
    if clip_rewards:
        env = gym.wrappers.TransformReward(env, sign)
    if frame_stack > 1:
        env = gym.wrappers.FrameStackObservation(env, frame_stack)
    return env


__all__ = [
    "ATARI_EXTRA_HINT",
    "EpisodicLife",
    "FireOnReset",
    "is_atari_id",
    "make_env",
    "needs_fire",
    "require_ale",
]
