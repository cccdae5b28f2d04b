"""From an env spec to envs: one env to read the spaces, and the vector env a run steps.

``spec`` is what ``--env`` takes: a registered Gymnasium id (``CartPole-v1``),
``module:EnvClass`` or ``module:make_fn`` (any callable returning a ``gymnasium.Env``),
``module:Env-v0`` for an id that importing ``module`` registers, or an Atari id
(``ALE/Pong-v5``, preprocessed by :mod:`vecpg.atari`); ``--env-kwargs`` reach the
constructor. The trainer, the Ray
samplers and ``vecpg eval`` all build their envs here, so an id means the same everywhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym

from vecpg.atari import is_atari_id
from vecpg.errors import ConfigError
from vecpg.run.config import TrainConfig
from vecpg.vector.gymnasium_adapter import GymnasiumVectorAdapter, needs_adapter
from workers.loop import construction_output_silenced


def env_factory(
    spec: str, env_kwargs: dict[str, Any] | None = None
) -> tuple[Callable[..., gym.Env], str | None]:
    """A picklable env constructor for ``spec``, and the Gymnasium id if it is one.

    ``spec`` is a registered Gymnasium id (``CartPole-v1``), ``module:EnvClass`` or
    ``module:make_fn`` (any callable returning a ``gymnasium.Env``), ``module:Env-v0`` for
    an id that importing ``module`` registers (Gymnasium's own syntax: ``gym.make`` imports
    the module, so worker processes register the id too), or an Atari id ``ALE/<Game>-v5``,
    built by :func:`vecpg.atari.make_env`. ``env_kwargs`` go to ``gym.make`` (to the class
    or function for ``module:`` specs, to :func:`vecpg.atari.make_env` for Atari ids).
    The constructor takes further keyword arguments (``render_mode``) the same way.

    Raises:
        ConfigError: unknown id, unimportable module, missing attribute or missing
            optional extra (one line).
    """
    kwargs = dict(env_kwargs or {})
    if is_atari_id(spec):
        from vecpg import atari

        atari.require_ale()
        return partial(atari.make_env, spec.removeprefix("ale_py:"), **kwargs), None
    if ":" in spec:
        module_name, attribute = spec.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(
                f"env {spec!r}: cannot import module {module_name!r} ({error})"
            ) from None
        target = getattr(module, attribute, None)
        if callable(target):
            return partial(target, **kwargs), None
        if attribute in gym.envs.registry:
            return partial(gym.make, spec, **kwargs), spec
        raise ConfigError(
            f"env {spec!r}: module {module_name!r} has no env class or function {attribute!r}"
        )
    if spec not in gym.envs.registry:
        import difflib

        close = difflib.get_close_matches(spec, list(gym.envs.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown env id {spec!r}: not in Gymnasium's registry (use a registered id or "
            f"module:EnvClass){hint}"
        )
    return partial(gym.make, spec, **kwargs), spec


def env_spaces(spec: str, env_kwargs: dict[str, Any] | None = None) -> tuple[gym.Space, gym.Space]:
    """One env's (observation_space, action_space), from an env built and closed here.

    Building one env in this process turns a broken env into a one-line ConfigError before
    any worker starts, and gives the spaces the policy is built for. What the env prints
    while it is built (a library's deprecation notice) is not shown here: the vector env
    shows it once per run, and a failure still reaches the user as the ConfigError.
    """
    factory, _ = env_factory(spec, env_kwargs)
    try:
        with construction_output_silenced():
            probe = factory()
    except (gym.error.Error, TypeError) as error:
        raise ConfigError(f"env {spec!r} cannot be created: {error}") from None
    if not isinstance(probe, gym.Env):
        raise ConfigError(f"env {spec!r} did not produce a gymnasium.Env (got {probe!r})")
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def make_vector_env(config: TrainConfig) -> gym.vector.VectorEnv:
    """The SAME_STEP-autoreset vector env of ``config`` with vecpg's fast-path attributes."""
    factory, env_id = env_factory(config.env, config.env_kwargs)
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if config.vector == "subproc":
        from vecpg.vector.env import SubprocVectorEnv
        from vecpg.vector.make import make_vec

        # copy=False: the sampler copies each observation into the rollout buffer before the
        # next step, so views into shared memory save one copy of every observation.
        options: dict[str, Any] = {"autoreset_mode": same_step, "infos": "none", "copy": False}
        options["num_workers"] = config.num_workers
        options["step_timeout"] = config.step_timeout
        if config.overlap_inference:
            # Halves of the envs on separate workers; recv() returns one worker's envs.
            options["num_workers"] = config.num_workers or 2
            options["parent_share"] = False
            options["batch_size"] = config.num_envs // options["num_workers"]
        if env_id is not None:
            return make_vec(env_id, config.num_envs, env_kwargs=config.env_kwargs, **options)
        return SubprocVectorEnv([factory] * config.num_envs, **options)
    if config.vector == "native":
        from vecpg.vector.native import make_native_vector_env

        return make_native_vector_env(config.env, config.num_envs, config.env_kwargs)
    env = gym.vector.SyncVectorEnv([factory] * config.num_envs, autoreset_mode=same_step)
    return GymnasiumVectorAdapter(env) if needs_adapter(env) else env
