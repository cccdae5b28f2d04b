"""Training configuration: one dataclass, per-algorithm defaults, YAML/TOML files, validation.

Every hyperparameter is a field of :class:`TrainConfig` with its help text in the field
metadata; ``vecpg train`` builds one command-line option per field from that metadata, so
the CLI, config files and the library share one source of truth.

Precedence when resolving a configuration (lowest first): the field default, the
algorithm's defaults (:data:`ALGO_DEFAULTS`), the env family's preset
(:mod:`vecpg.run.presets`; ``preset: none`` skips it), the config file, the command line.
The resolved ``preset`` is the family that applied, or ``none``.

Example:
    >>> config = resolve_config(cli_values={"algo": "a2c", "seed": 3})
    >>> config.algo, config.seed, config.optimizer, config.preset
    ('a2c', 3, 'rmsprop', 'classic-control')
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vecpg.atari import is_atari_id
from vecpg.errors import ConfigError
from vecpg.run import presets

ALGORITHMS = ("ppo", "a2c", "reinforce")
SEED_MAX = 2**32 - 1  # np.random.seed takes 32-bit seeds
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _field(default: Any, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are PPO's; see ALGO_DEFAULTS."""

    # --- run ---
    env: str = _field(
        "CartPole-v1", "Gymnasium env id, or 'module:EnvClass' / 'module:make_fn' for your own env"
    )
    env_kwargs: dict[str, Any] = _field(
        {},
        "keyword arguments for the env, as JSON on the command line (e.g. '{\"mode\": 1}'): "
        "to gym.make for an id, to the class or function for module:Name, to "
        "vecpg.atari.make_env for ALE ids (its preprocessing options, the rest to gym.make)",
    )
    algo: str = _field("ppo", "learning algorithm", choices=ALGORITHMS)
    preset: str = _field(
        presets.AUTO,
        "tuned hyperparameters for the env's family (auto), none (plain defaults), or a "
        f"family: {', '.join(presets.FAMILIES)} (vecpg/run/presets.py cites each source); "
        "config files and flags override it, config.yaml records the one that applied",
    )
    seed: int = _field(1, "seed for torch, numpy, python and the envs (same seed, same run on CPU)")
    total_steps: int = _field(200_000, "env steps (summed over envs) to train for")
    stop_at_return: float | None = _field(
        None, "stop once the mean return of the last 20 episodes reaches this value"
    )
    device: str = _field(
        "auto", "torch device; auto picks cuda when available", choices=("auto", "cpu", "cuda")
    )
    run_dir: str | None = _field(
        None, "output directory (default runs/<env>__<algo>__<seed>__<YYYYmmdd-HHMMSS>)"
    )
    torch_threads: int = _field(
        1, "torch intra-op threads; small nets are fastest with 1 (0 keeps torch's default)"
    )
    # --- sampling ---
    num_envs: int = _field(16, "parallel envs N")
    num_workers: int | None = _field(
        None, "worker processes for the envs (default: the vector env's choice)"
    )
    step_timeout: float | None = _field(
        None,
        "seconds an env may take to be built, reset or stepped before the run stops with an "
        "error naming it (vector subproc; default: no limit, a dead worker still stops it)",
    )
    vector: str = _field(
        "subproc",
        "vector env: subproc (vecpg's shared-memory workers), sync (in-process) or native "
        "(the env family's own C++ vector env: ale_py.AtariVectorEnv for ALE ids)",
        choices=("subproc", "sync", "native"),
    )
    overlap_inference: bool = _field(
        False,
        "step two halves of the envs in alternation, running the policy on one half while "
        "the workers step the other (vector subproc, an even number of workers, 2 by "
        "default); pays when inference costs about as much as a step and grows with the "
        "batch (CNN policies, many cores)",
    )
    backend: str = _field(
        "local",
        "where envs run: local (this machine) or ray (num_samplers Ray actors, each stepping "
        "num_envs/num_samplers envs on its node; see vecpg.distributed)",
        choices=("local", "ray"),
    )
    num_samplers: int = _field(2, "backend ray: sampler actors K; num_envs must be divisible by K")
    ray_address: str | None = _field(
        None, "backend ray: cluster address (default: $RAY_ADDRESS, else a local Ray instance)"
    )
    sampler_cpus: float = _field(
        1.0, "backend ray: CPUs reserved per sampler actor (its env workers run within them)"
    )
    sampler_max_restarts: int = _field(
        3, "backend ray: times Ray restarts a dead sampler actor (the update waits for it)"
    )
    num_steps: int = _field(16, "rollout length T per env between updates")
    normalize_observations: bool = _field(
        False, "running mean/std observation normalization (clipped to +-10)"
    )
    normalize_rewards: bool = _field(
        False, "scale rewards by the running std of the discounted return (VecNormalize-style)"
    )
    # --- returns and advantages ---
    gamma: float = _field(0.98, "discount factor")
    gae_lambda: float = _field(0.8, "GAE lambda (used when advantage=gae)")
    advantage: str = _field(
        "gae",
        "advantage estimator (ppo: gae; a2c: gae or nstep; reinforce: mc)",
        choices=("gae", "nstep", "mc"),
    )
    nstep: int = _field(0, "n for n-step returns (0: the rollout length)")
    normalize_advantages: bool = _field(True, "normalize advantages per minibatch")
    # --- optimization ---
    learning_rate: float = _field(2.5e-3, "optimizer learning rate")
    anneal_lr: bool = _field(False, "anneal the learning rate linearly to 0 over total_steps")
    optimizer: str = _field("adam", "optimizer", choices=("adam", "rmsprop"))
    optimizer_eps: float = _field(1e-5, "epsilon of the optimizer")
    max_grad_norm: float = _field(0.5, "clip the global gradient norm to this (0: no clipping)")
    compile: bool = _field(
        False,
        "PPO and A2C: torch.compile the loss (policy forward and loss terms); the first update "
        "compiles (17 s for a MuJoCo MLP on CPU), later ones run faster where an update has "
        "many gradient steps (PPO on MuJoCo: 0.75x; CartPole, A2C: no gain)",
    )
    num_epochs: int = _field(4, "PPO epochs per rollout")
    num_minibatches: int = _field(2, "PPO minibatches per epoch over the flattened T*N batch")
    clip_coef: float = _field(0.2, "PPO surrogate clipping coefficient")
    clip_value_loss: bool = _field(False, "PPO: clip the value loss around the old values")
    target_kl: float | None = _field(None, "PPO: stop the epochs early once approx-KL exceeds this")
    ent_coef: float = _field(0.0, "entropy bonus coefficient")
    vf_coef: float = _field(0.5, "value loss coefficient")
    use_baseline: bool = _field(True, "REINFORCE: subtract a learned value baseline")
    # --- policy ---
    hidden_sizes: list[int] = _field(
        [64, 64],
        "hidden layer sizes of actor and critic after the observation encoder (none: the "
        "encoder's features go straight to the linear heads, as for Atari's NatureCNN)",
    )
    activation: str = _field("tanh", "hidden activation", choices=("tanh", "relu"))
    shared_trunk: bool = _field(False, "share one trunk between actor and critic")
    squash: bool = _field(False, "Box actions: tanh-squashed Gaussian instead of clipped Gaussian")
    log_std_init: float = _field(
        0.0, "initial log std of Gaussian policies (of the exploration weights with use_sde)"
    )
    use_sde: bool = _field(
        False,
        "Box actions: generalized state-dependent exploration (gSDE), noise that is a linear "
        "function of the actor's last features with weights redrawn every sde_sample_freq "
        "steps, as SB3's use_sde",
    )
    sde_sample_freq: int = _field(
        -1, "use_sde: env steps between redraws of the exploration weights (-1: once per rollout)"
    )
    ortho_init: bool = _field(True, "orthogonal weight initialization")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/YAML-serializable values."""
        return dataclasses.asdict(self)


# Tuned for CartPole-v1 wall time on the project's 2-core machine (median of seeds of env
# steps to a mean return of 475, times the measured cost per step and per gradient step).
# PPO's are the field defaults above: 16 envs x 16 steps, 2 minibatches of 128, 4 epochs,
# lr 2.5e-3 constant, gamma 0.98, lambda 0.8 (a median of 46.8k env steps to solve in
# benchmarks/training.py at commit 04601e0). Fewer envs finish the last 20 full-length
# episodes sooner; 32 envs cost about 16k more steps to prove a solve. For long runs on
# harder envs, consider --gamma 0.99 --gae-lambda 0.95 --anneal-lr.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "a2c": {
        "num_envs": 16,
        "num_steps": 8,
        "advantage": "gae",
        "gamma": 0.98,
        "gae_lambda": 1.0,  # with T = 8: n-step returns up to 8 steps, as SB3's A2C
        "learning_rate": 2e-3,
        "optimizer": "rmsprop",
        "normalize_advantages": False,
        "anneal_lr": False,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
    },
    "reinforce": {
        # Episodes must end inside a rollout to count (see learners/reinforce.py): 128 steps
        # keep most CartPole steps usable early on while updating often.
        "num_envs": 16,
        "num_steps": 128,
        "advantage": "mc",
        "gamma": 0.99,
        "learning_rate": 5e-3,
        "anneal_lr": False,
        "normalize_advantages": True,
        "max_grad_norm": 0.5,
    },
}

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def field_help(name: str) -> str:
    """Help text of a field, with the per-algorithm defaults appended where they differ."""
    text = FIELDS[name].metadata["help"]
    defaults = {algo: ALGO_DEFAULTS[algo].get(name, FIELDS[name].default) for algo in ALGORITHMS}
    if name not in ("algo", "env") and len({repr(v) for v in defaults.values()}) > 1:
        text += " (default " + ", ".join(f"{a}: {v}" for a, v in defaults.items()) + ")"
    return text


def _coerce(name: str, value: Any) -> Any:
    """Convert a file/CLI value to the field's type, or raise a one-line ConfigError."""
    kind = str(_TYPES[name])
    optional = "None" in kind
    if name == "preset" and isinstance(value, str):
        return value  # "none" is a preset name here, not an empty value
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    try:
        if kind.startswith("dict"):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise ConfigError(
                        f"{name} must be a JSON object such as '{{\"key\": 1}}' (got {value!r})"
                    ) from None
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                raise ValueError
            return dict(value)
        if kind.startswith("list"):
            if isinstance(value, str):
                value = [part for part in value.replace(",", " ").split() if part]
            return [_as_int(name, v) for v in value]
        if "bool" in kind:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if "int" in kind:
            return _as_int(name, value)
        if "float" in kind:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be of type {kind} (got {value!r})") from None


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    number = float(value) if isinstance(value, str) else value
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError
        number = int(number)
    if not isinstance(number, int):
        raise ValueError
    return number


def _normalize_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    normalized = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown option {key!r} in {source}{hint}")
        normalized[name] = value
    return normalized


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read option values from a YAML (.yaml/.yml), TOML (.toml) or JSON file.

    Keys are field names (dashes or underscores); a top-level ``[train]`` table/mapping is
    also accepted. Returns the raw values; :func:`resolve_config` validates them.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    "reading YAML config files needs PyYAML: pip install 'vecpg[yaml]'"
                ) from None
            values = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: use a .yaml, .yml, .toml or .json file")
    except ConfigError:
        raise
    except Exception as error:  # each parser has its own error type; all are user errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(f"cannot parse config file {str(path)!r}: {first_line}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    return values


def config_file_text(config: TrainConfig) -> tuple[str, str]:
    """The resolved config as a file that :func:`load_config_file` reads back:
    ``("config.yaml", text)``, or ``("config.json", text)`` without PyYAML.

    Example:
        >>> name, text = config_file_text(resolve_config(cli_values={"env": "Pendulum-v1"}))
        >>> name, text.splitlines()[0], text.splitlines()[3]
        ('config.yaml', 'env: Pendulum-v1', 'preset: classic-continuous')
    """
    values = config.to_dict()
    try:
        import yaml
    except ImportError:
        return "config.json", json.dumps(values, indent=2) + "\n"
    return "config.yaml", yaml.safe_dump(values, sort_keys=False)


def resolve_config(
    file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None
) -> TrainConfig:
    """Merge algorithm defaults, config-file values and command-line values; validate.

    Args:
        file_values: values read from a config file (field names, dashes allowed).
        cli_values: values given on the command line; they override the file.

    Returns:
        A validated :class:`TrainConfig`.

    Raises:
        ConfigError: unknown option, wrong type or invalid value (one-line message).
    """
    file_values = _normalize_keys(file_values or {}, "config file")
    cli_values = _normalize_keys(cli_values or {}, "arguments")
    algo = cli_values.get("algo", file_values.get("algo", TrainConfig.algo))
    if algo not in ALGORITHMS:
        raise ConfigError(f"algo must be one of {', '.join(ALGORITHMS)} (got {algo!r})")
    env = cli_values.get("env", file_values.get("env", TrainConfig.env))
    preset = cli_values.get("preset", file_values.get("preset", TrainConfig.preset))
    preset_name, preset_values = presets.preset_values(str(preset), str(env), algo)
    values: dict[str, Any] = {**ALGO_DEFAULTS[algo], **preset_values}
    for source in (file_values, cli_values):
        values.update({name: _coerce(name, value) for name, value in source.items()})
    values["preset"] = preset_name
    config = TrainConfig(**values)
    try:
        validate(config)
    except ConfigError as error:
        # A preset value that clashes with the user's own (num_minibatches against a
        # smaller rollout) would otherwise be an error about an option never given.
        unset = [name for name in preset_values if name not in file_values | cli_values]
        if any(str(error).startswith(f"{name} ") for name in unset):
            raise ConfigError(
                f"{error}; the value comes from the {preset_name} preset: set it too, "
                "or use --preset none"
            ) from None
        raise
    return config


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: TrainConfig) -> None:
    """Raise ConfigError (one line naming the option and its valid range) for bad values."""
    for name, spec in FIELDS.items():
        choices = spec.metadata.get("choices")
        value = getattr(config, name)
        if choices and value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be finite (got {value})")
    c = config
    _check(bool(c.env.strip()), "env must be a Gymnasium id or module:EnvClass")
    if ":" in c.env:
        module, _, attribute = c.env.partition(":")
        _check(
            _MODULE_NAME.fullmatch(module) is not None and bool(attribute.strip()),
            f"env {c.env!r} must be a Gymnasium id or module:name, with a dotted module "
            "name before the colon and an env class, make function or env id after it "
            "(e.g. my_package.envs:MyEnv)",
        )
    _check(
        0 <= c.seed <= SEED_MAX,
        f"seed must be between 0 and {SEED_MAX} (numpy's 32-bit seeds; got {c.seed})",
    )
    _check(c.total_steps > 0, f"total_steps must be > 0 (got {c.total_steps})")
    _check(c.num_envs >= 1, f"num_envs must be >= 1 (got {c.num_envs})")
    _check(
        c.num_workers is None or 1 <= c.num_workers <= c.num_envs,
        f"num_workers must be between 1 and num_envs={c.num_envs} (got {c.num_workers})",
    )
    _check(
        c.step_timeout is None or c.step_timeout > 0,
        f"step_timeout must be > 0 seconds (got {c.step_timeout})",
    )
    _check(
        c.vector != "native" or is_atari_id(c.env),
        f"vector native needs an env family with its own vector env (Atari: ALE/<Game>-v5), "
        f"not {c.env!r}; use vector subproc or sync",
    )
    _check(c.num_steps >= 1, f"num_steps must be >= 1 (got {c.num_steps})")
    _check(c.num_samplers >= 1, f"num_samplers must be >= 1 (got {c.num_samplers})")
    _check(c.sampler_cpus > 0, f"sampler_cpus must be > 0 (got {c.sampler_cpus})")
    _check(
        c.sampler_max_restarts >= 0,
        f"sampler_max_restarts must be >= 0 (got {c.sampler_max_restarts})",
    )
    if c.backend == "ray":
        _check(
            c.num_envs % c.num_samplers == 0,
            f"num_envs={c.num_envs} must be divisible by num_samplers={c.num_samplers} "
            "(each Ray sampler steps num_envs/num_samplers envs)",
        )
        per_sampler = c.num_envs // c.num_samplers
        _check(
            c.num_workers is None or c.num_workers <= per_sampler,
            f"num_workers is per sampler with backend ray and must be between 1 and "
            f"num_envs/num_samplers={per_sampler} (got {c.num_workers})",
        )
    if c.overlap_inference:
        envs = c.num_envs // c.num_samplers if c.backend == "ray" else c.num_envs
        workers = c.num_workers or 2
        _check(c.vector == "subproc", "overlap_inference needs vector=subproc")
        _check(
            workers % 2 == 0 and envs % workers == 0,
            f"overlap_inference needs an even number of workers that divides the envs of "
            f"one vector env (got {workers} workers for {envs} envs)",
        )
    _check(0.0 <= c.gamma <= 1.0, f"gamma must be in [0, 1] (got {c.gamma})")
    _check(0.0 <= c.gae_lambda <= 1.0, f"gae_lambda must be in [0, 1] (got {c.gae_lambda})")
    _check(c.nstep >= 0, f"nstep must be >= 0 (got {c.nstep})")
    _check(c.learning_rate > 0, f"learning_rate must be > 0 (got {c.learning_rate})")
    _check(c.optimizer_eps > 0, f"optimizer_eps must be > 0 (got {c.optimizer_eps})")
    _check(c.max_grad_norm >= 0, f"max_grad_norm must be >= 0 (got {c.max_grad_norm})")
    _check(c.num_epochs >= 1, f"num_epochs must be >= 1 (got {c.num_epochs})")
    batch = c.num_envs * c.num_steps
    _check(
        1 <= c.num_minibatches <= batch,
        f"num_minibatches must be between 1 and num_envs*num_steps={batch} "
        f"(got {c.num_minibatches})",
    )
    _check(c.clip_coef > 0, f"clip_coef must be > 0 (got {c.clip_coef})")
    _check(c.target_kl is None or c.target_kl > 0, f"target_kl must be > 0 (got {c.target_kl})")
    _check(c.ent_coef >= 0, f"ent_coef must be >= 0 (got {c.ent_coef})")
    _check(c.vf_coef >= 0, f"vf_coef must be >= 0 (got {c.vf_coef})")
    _check(
        c.sde_sample_freq == -1 or c.sde_sample_freq >= 1,
        f"sde_sample_freq must be -1 (once per rollout) or >= 1 (got {c.sde_sample_freq})",
    )
    _check(not (c.use_sde and c.squash), "use_sde and squash cannot be combined; choose one")
    _check(c.torch_threads >= 0, f"torch_threads must be >= 0 (got {c.torch_threads})")
    _check(
        all(size >= 1 for size in c.hidden_sizes),
        f"hidden_sizes must be positive ints (got {c.hidden_sizes})",
    )
    valid_advantages = {"ppo": ("gae",), "a2c": ("gae", "nstep"), "reinforce": ("mc",)}[c.algo]
    _check(
        c.advantage in valid_advantages,
        f"advantage for {c.algo} must be one of {', '.join(valid_advantages)} "
        f"(got {c.advantage!r})",
    )
    _check(
        c.stop_at_return is None or math.isfinite(c.stop_at_return),
        "stop_at_return must be a finite number",
    )
