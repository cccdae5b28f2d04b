"""Per-env-family defaults: what an env family's published results were trained with.

A preset sits between the algorithm's defaults and the user's options (see
:func:`vecpg.run.config.resolve_config`): config files and flags still override every value,
and ``config.yaml`` records the preset that applied (``preset: atari``). ``--preset auto``
(the default) picks the family from the env id; ``--preset none`` keeps the algorithm's
defaults. A family joins by adding a recogniser to :data:`FAMILIES` and its table to
:data:`PRESETS`.

Atari (``ALE/<Game>-v5``, preprocessed by :mod:`vecpg.atari`):

- every algorithm: one NatureCNN shared by actor and critic, then linear heads
  (``shared_trunk``, no hidden layers), as CleanRL and SB3's ``CnnPolicy``;
  ``torch_threads=0``: all cores, since sampling and the update take turns, the update
  has every core to itself, and a CNN update (unlike a small MLP's) scales with threads;
  ``vector="native"``: ALE's own C++ vector env steps games on threads without
  inter-process hand-offs, the fastest backend measured for Pong x16 (see
  ``benchmarks/ATARI.md``); ``--vector subproc`` runs :func:`vecpg.atari.make_env` in
  vecpg's workers instead (FIRE after every lost life, custom wrappers);
- PPO: CleanRL's ``ppo_atari.py`` (8 envs x 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4
  annealed, clip 0.1 with a clipped value loss, entropy 0.01, value 0.5, gamma 0.99,
  lambda 0.95, gradient norm 0.5, 10M steps);
- A2C: rl-baselines3-zoo's ``a2c.yml`` Atari entry on SB3's A2C defaults (16 envs x 5 steps,
  RMSprop lr 7e-4 eps 1e-5, entropy 0.01, value 0.25, gamma 0.99, n-step returns
  (lambda 1), no advantage normalization, gradient norm 0.5, 10M steps). SB3 uses a
  TensorFlow-style RMSprop (epsilon inside the square root); vecpg uses torch's.

Example:
    >>> family_of("ALE/Pong-v5"), family_of("CartPole-v1")
    ('atari', 'none')
    >>> preset_values("atari", "ppo")["clip_coef"]
    0.1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vecpg.atari import is_atari_id
from vecpg.errors import ConfigError

_ATARI_RUN: dict[str, Any] = {
    "vector": "native",
    "shared_trunk": True,
    "hidden_sizes": [],
    "torch_threads": 0,
}

#: family -> {"all": values for every algorithm, algo: values for that algorithm}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "atari": {
        "all": _ATARI_RUN,
        "ppo": {
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
        "a2c": {
            "total_steps": 10_000_000,
            "num_envs": 16,
            "num_steps": 5,
            "learning_rate": 7e-4,
            "anneal_lr": False,
            "optimizer": "rmsprop",
            "optimizer_eps": 1e-5,
            "gamma": 0.99,
            "advantage": "gae",
            "gae_lambda": 1.0,
            "ent_coef": 0.01,
            "vf_coef": 0.25,
            "max_grad_norm": 0.5,
            "normalize_advantages": False,
        },
    },
}

#: (recogniser of env ids, family), tried in order by ``preset="auto"``.
FAMILIES: list[tuple[Callable[[str], bool], str]] = [(is_atari_id, "atari")]

PRESET_CHOICES = ("auto", *PRESETS)


def family_of(env: str) -> str:
    """The preset family of an env id, ``"none"`` when no family claims it."""
    for recognises, family in FAMILIES:
        if recognises(env):
            return family
    return "none"


def preset_values(preset: str, algo: str) -> dict[str, Any]:
    """The values preset ``preset`` sets for ``algo`` (a fresh dict; lists copied)."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESET_CHOICES)} (got {preset!r})")
    table = PRESETS[preset]
    values = {**table.get("all", {}), **table.get(algo, {})}
    return {
        name: list(value) if isinstance(value, list) else value for name, value in values.items()
    }
