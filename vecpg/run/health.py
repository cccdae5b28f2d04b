"""Training health warnings: the signals a practitioner checks, read from each metrics row.

The learners already compute every signal (``nonfinite_log_probs``, ``entropy``,
``std_min``/``std_max``, ``return_std``, ``advantage_std``, ``log_prob_mismatch``,
``explained_variance``, the losses); this module only judges them, so nothing is computed
twice. All thresholds live in :class:`HealthThresholds`, one documented table.

:class:`HealthMonitor` is pure: ``check(row)`` returns structured :class:`HealthWarning`
records, each condition at most once per run. :class:`HealthCallback` plugs it into the
trainer: it emits the warnings through :mod:`warnings` (category
:class:`TrainingHealthWarning`), appends them to ``health.jsonl`` in the run directory, and
on a non-finite value stops the run with :class:`~vecpg.errors.NonFiniteError` -- after the
checkpoint callback has saved the failing state (see :mod:`vecpg.run.checkpoint`).

Ordering contract with the trainer: callbacks run in list order for each row; a callback
that raises stops training. Pass the :class:`~vecpg.run.checkpoint.CheckpointCallback` to
``HealthCallback(checkpoint=...)`` and the failing state is saved before the error is
raised whatever the order; the recommended order is still checkpoint, health, progress,
TensorBoard.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vecpg.errors import NonFiniteError

# Row keys whose non-finite value is fatal (besides ``nonfinite_log_probs > 0`` and every
# key ending in ``_loss``). ``episode_return_mean`` and ``explained_variance`` are NaN
# legitimately (no finished episode yet; constant returns), so they are not in the list.
FATAL_NONFINITE_KEYS = ("entropy", "approx_kl", "grad_norm", "std_min", "std_max")


class TrainingHealthWarning(UserWarning):
    """Category of the warnings :class:`HealthCallback` emits (filter it with :mod:`warnings`)."""


@dataclass(frozen=True)
class HealthThresholds:
    """Every threshold of the health checks, in one place.

    Defaults are chosen so that a healthy PPO/A2C run on CartPole or a MuJoCo task with
    reward normalization raises none, while the failure modes they name trip them early.
    """

    entropy_collapse_fraction: float = 0.05
    """Entropy below this fraction of the action space's maximum entropy is a collapse
    (discrete spaces only: a Gaussian's entropy has no maximum; see ``std_tiny``)."""

    entropy_collapse_before_fraction: float = 0.25
    """...but only while ``global_step`` is before this fraction of ``total_steps``: a
    near-deterministic policy late in training is expected, early it is premature."""

    entropy_stuck_fraction: float = 0.98
    """Entropy at or above this fraction of the maximum counts as "still uniform"."""

    entropy_stuck_updates: int = 30
    """Warn when entropy has stayed "still uniform" for this many consecutive updates..."""

    entropy_stuck_after_fraction: float = 0.2
    """...and ``global_step`` has passed this fraction of ``total_steps`` (when known)."""

    std_tiny: float = 1e-3
    """Gaussian ``std_min`` below this times the action half-range: exploration is dead
    and log-probabilities explode (half-range 1 when the bounds are unknown/infinite)."""

    std_huge: float = 5.0
    """Gaussian ``std_max`` above this times the action half-range: actions are mostly
    clipped noise."""

    return_std_max: float = 1e3
    """``return_std`` above this: the critic regresses targets of extreme scale."""

    advantage_std_max: float = 1e3
    """``advantage_std`` (before normalization) above this."""

    log_prob_mismatch_tolerance: float = 1e-3
    """Largest |stored - recomputed| log_prob before the first gradient step; above it the
    learner is not scoring the actions that were sent (clipping, normalizer drift, a
    different policy)."""

    explained_variance_negative_updates: int = 25
    """Warn when ``explained_variance`` has been below 0 for this many consecutive updates
    (the critic predicts worse than a constant)."""

    explained_variance_min_return_std: float = 1e-2
    """...counting only updates whose ``return_std`` is at least this: with nearly constant
    returns (a solved CartPole, every episode truncated at its time limit, return_std
    ~0.005) explained variance divides by ~0 and is noise, negative half the time."""


@dataclass(frozen=True)
class HealthWarning:
    """One health finding, as logged to ``health.jsonl``.

    Attributes:
        condition: stable identifier, e.g. ``"entropy_collapse"``.
        severity: ``"warning"`` or ``"fatal"`` (fatal stops the run).
        message: the human-readable text: what, the number, what to try.
        global_step: env steps at the update that tripped it.
        update: update index at that point (None if the row had none).
        value: the offending value.
        threshold: the threshold it crossed.
    """

    condition: str
    severity: str
    message: str
    global_step: int
    update: int | None
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def nonfinite_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The fatal non-finite entries of a metrics row (empty if the row is healthy).

    >>> nonfinite_values({"policy_loss": float("nan"), "episode_return_mean": float("nan")})
    {'policy_loss': nan}
    >>> nonfinite_values({"nonfinite_log_probs": 3, "value_loss": 0.5})
    {'nonfinite_log_probs': 3.0}
    """
    found: dict[str, float] = {}
    count = _number(row, "nonfinite_log_probs")
    if count is not None and (count > 0 or not math.isfinite(count)):
        found["nonfinite_log_probs"] = count
    for key in row:
        if key.endswith("_loss") or key in FATAL_NONFINITE_KEYS:
            value = _number(row, key)
            if value is not None and not math.isfinite(value):
                found[key] = value
    return found


def max_entropy(action_space: Any) -> float | None:
    """Largest entropy (nats) a policy over ``action_space`` can have; None if unbounded.

    >>> import gymnasium as gym
    >>> round(max_entropy(gym.spaces.Discrete(2)), 4)
    0.6931
    >>> max_entropy(gym.spaces.Box(-1, 1, (3,))) is None
    True
    """
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return math.log(int(action_space.n))
    if isinstance(action_space, spaces.MultiDiscrete):
        return float(sum(math.log(int(n)) for n in action_space.nvec.reshape(-1)))
    if isinstance(action_space, spaces.MultiBinary):
        return float(math.log(2.0) * int(math.prod(action_space.shape)))
    return None


def action_half_range(action_space: Any) -> float:
    """Largest half-width of a Box action space's bounds; 1.0 if unknown or infinite."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Box):
        half = (action_space.high.astype(float) - action_space.low.astype(float)) / 2.0
        finite = half[(half > 0) & (half < float("inf"))]
        if finite.size:
            return float(finite.max())
    return 1.0


@dataclass
class HealthMonitor:
    """Judges metrics rows; each condition warns at most once per run.

    Args:
        action_space: the single-env action space (sets the maximum entropy and the
            Gaussian std scale); None disables the entropy checks.
        total_steps: planned env steps (enables the "early" and "after" fractions); None
            means unknown.
        thresholds: the table of thresholds.

    Example:
        >>> import gymnasium as gym
        >>> monitor = HealthMonitor(gym.spaces.Discrete(2), total_steps=100_000)
        >>> [w.condition for w in monitor.check({"global_step": 4096, "entropy": 0.001})]
        ['entropy_collapse']
        >>> monitor.check({"global_step": 8192, "entropy": 0.001})  # once per condition
        []
    """

    action_space: Any = None
    total_steps: int | None = None
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    warned: set[str] = field(default_factory=set)
    history: list[HealthWarning] = field(default_factory=list)
    _entropy_stuck_streak: int = 0
    _negative_ev_streak: int = 0

    def check(self, row: Mapping[str, Any]) -> list[HealthWarning]:
        """Return the new findings for one update's metrics row (fatal ones first)."""
        found: list[HealthWarning] = []
        step = int(_number(row, "global_step") or 0)
        update_value = _number(row, "update")
        update = int(update_value) if update_value is not None else None

        def report(condition, message, value, threshold, severity="warning"):
            if condition in self.warned:
                return
            self.warned.add(condition)
            finding = HealthWarning(
                condition, severity, message, step, update, float(value), float(threshold)
            )
            found.append(finding)
            self.history.append(finding)

        limits = self.thresholds
        at = f"at global_step {step:,}"

        nonfinite = nonfinite_values(row)
        if nonfinite:
            listed = ", ".join(f"{key}={value:g}" for key, value in nonfinite.items())
            report(
                "nonfinite",
                f"non-finite training values {at}: {listed}. Training cannot continue on "
                "NaN/inf. Try a lower learning rate, gradient clipping (max_grad_norm), "
                "observation normalization, or check the env for NaN observations/rewards.",
                next(iter(nonfinite.values())),
                0.0,
                severity="fatal",
            )

        self._check_entropy(row, step, at, report)

        horizon = action_half_range(self.action_space)
        std_min, std_max = _number(row, "std_min"), _number(row, "std_max")
        if std_min is not None and std_min < limits.std_tiny * horizon:
            report(
                "std_tiny",
                f"Gaussian std_min={std_min:.3g} {at} is below "
                f"{limits.std_tiny * horizon:.3g}: exploration has stopped and log_probs "
                "become huge. Try a larger entropy coefficient, a higher log_std lower "
                "bound, or a lower learning rate.",
                std_min,
                limits.std_tiny * horizon,
            )
        if std_max is not None and std_max > limits.std_huge * horizon:
            report(
                "std_huge",
                f"Gaussian std_max={std_max:.3g} {at} is above "
                f"{limits.std_huge * horizon:.3g} (action half-range {horizon:g}): actions "
                "are mostly clipped noise. Try a lower log_std_init, a smaller entropy "
                "coefficient, or rescale the action space to [-1, 1].",
                std_max,
                limits.std_huge * horizon,
            )

        for key, limit, what in (
            ("return_std", limits.return_std_max, "returns"),
            ("advantage_std", limits.advantage_std_max, "advantages"),
        ):
            value = _number(row, key)
            if value is not None and math.isfinite(value) and value > limit:
                report(
                    f"{key}_extreme",
                    f"{key}={value:.3g} {at} exceeds {limit:g}: {what} of this scale make "
                    "the value loss dominate and gradients explode. Try reward "
                    "normalization/scaling (normalize_reward), a lower gamma, or rescaling "
                    "the env's rewards.",
                    value,
                    limit,
                )

        mismatch = _number(row, "log_prob_mismatch")
        tolerance = limits.log_prob_mismatch_tolerance
        if mismatch is not None and math.isfinite(mismatch) and mismatch > tolerance:
            report(
                "log_prob_mismatch",
                f"stored and recomputed log_probs differ by up to {mismatch:.3g} {at} "
                f"(tolerance {tolerance:g}) before any gradient step: the learner is not "
                "scoring the actions that were sent. Check that actions are stored before "
                "clipping/rescaling, that the observation normalizer is not updated between "
                "acting and learning, and that the same policy weights act and learn.",
                mismatch,
                tolerance,
            )

        explained = _number(row, "explained_variance")
        return_spread = _number(row, "return_std")
        if return_spread is not None and return_spread < limits.explained_variance_min_return_std:
            self._negative_ev_streak = 0  # not judgeable: see the threshold's docstring
        elif explained is not None and math.isfinite(explained):
            self._negative_ev_streak = self._negative_ev_streak + 1 if explained < 0 else 0
            if self._negative_ev_streak >= limits.explained_variance_negative_updates:
                report(
                    "explained_variance_negative",
                    f"explained_variance has been negative for {self._negative_ev_streak} "
                    f"updates (now {explained:.3g}) {at}: the critic predicts returns worse "
                    "than a constant. Try a higher value learning rate or value_coef, "
                    "reward normalization, or more epochs/larger batches for the critic.",
                    explained,
                    0.0,
                )
        found.sort(key=lambda finding: finding.severity != "fatal")
        return found

    def _check_entropy(self, row, step, at, report) -> None:
        limits = self.thresholds
        entropy = _number(row, "entropy")
        maximum = max_entropy(self.action_space) if self.action_space is not None else None
        if entropy is None or not math.isfinite(entropy) or not maximum:
            return
        progress = step / self.total_steps if self.total_steps else None
        collapse_at = limits.entropy_collapse_fraction * maximum
        early = progress is None or progress < limits.entropy_collapse_before_fraction
        if entropy < collapse_at and early:
            where = f"{progress:.0%} into training" if progress is not None else "early"
            report(
                "entropy_collapse",
                f"entropy={entropy:.3g} {at} ({where}) is below "
                f"{limits.entropy_collapse_fraction:.0%} of the maximum {maximum:.3g}: the "
                "policy became nearly deterministic early and may stop exploring. Try a "
                "larger entropy coefficient (ent_coef) or a lower learning rate.",
                entropy,
                collapse_at,
            )
        stuck_at = limits.entropy_stuck_fraction * maximum
        self._entropy_stuck_streak = self._entropy_stuck_streak + 1 if entropy >= stuck_at else 0
        late_enough = progress is None or progress >= limits.entropy_stuck_after_fraction
        if self._entropy_stuck_streak >= limits.entropy_stuck_updates and late_enough:
            report(
                "entropy_stuck",
                f"entropy={entropy:.3g} {at} has stayed at >= "
                f"{limits.entropy_stuck_fraction:.0%} of its maximum {maximum:.3g} for "
                f"{self._entropy_stuck_streak} updates: the policy is not learning. Check "
                "that rewards vary, try a higher learning rate or a smaller entropy "
                "coefficient.",
                entropy,
                stuck_at,
            )


def _trainer_attribute(trainer: Any, paths: Sequence[str]) -> Any:
    """First attribute path (``"envs.single_action_space"``) that exists on ``trainer``."""
    for path in paths:
        value: Any = trainer
        for name in path.split("."):
            value = getattr(value, name, None)
            if value is None:
                break
        if value is not None:
            return value
    return None


def trainer_action_space(trainer: Any) -> Any:
    return _trainer_attribute(
        trainer,
        ("action_space", "envs.single_action_space", "env.single_action_space"),
    )


def trainer_total_steps(trainer: Any) -> int | None:
    total = _trainer_attribute(trainer, ("total_steps", "config.total_steps"))
    return int(total) if total else None


class HealthCallback:
    """Trainer callback around :class:`HealthMonitor`.

    Emits each finding once through :mod:`warnings` (category
    :class:`TrainingHealthWarning`), appends it as one JSON line to
    ``<run_dir>/health.jsonl``, keeps it in :attr:`warnings`, and on a fatal finding asks
    ``checkpoint`` (a :class:`~vecpg.run.checkpoint.CheckpointCallback`, optional) to save the
    failing state, then raises :class:`~vecpg.errors.NonFiniteError`.

    Args:
        thresholds: the table of thresholds.
        checkpoint: the run's checkpoint callback, so the failing state is saved before the
            error whatever the callback order.
        action_space, total_steps: override what is read from the trainer in ``on_start``.
        emit: False to only record findings (no :mod:`warnings` output).
    """

    def __init__(
        self,
        thresholds: HealthThresholds | None = None,
        *,
        checkpoint: Any = None,
        action_space: Any = None,
        total_steps: int | None = None,
        emit: bool = True,
    ) -> None:
        self.monitor = HealthMonitor(
            action_space, total_steps, thresholds if thresholds is not None else HealthThresholds()
        )
        self.checkpoint = checkpoint
        self.emit = emit
        self.log_path: Path | None = None

    @property
    def warnings(self) -> list[HealthWarning]:
        return self.monitor.history

    def on_start(self, trainer: Any) -> None:
        if self.monitor.action_space is None:
            self.monitor.action_space = trainer_action_space(trainer)
        if self.monitor.total_steps is None:
            self.monitor.total_steps = trainer_total_steps(trainer)
        run_dir = getattr(trainer, "run_dir", None)
        if run_dir is not None:
            self.log_path = Path(run_dir) / "health.jsonl"

    def on_update(self, trainer: Any, row: Mapping[str, Any]) -> None:
        for finding in self.monitor.check(row):
            if self.log_path is not None:
                with open(self.log_path, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps(finding.to_dict(), allow_nan=True) + "\n")
            if finding.severity == "fatal":
                self._stop(trainer, row, finding)
            if self.emit:
                warnings.warn(finding.message, TrainingHealthWarning, stacklevel=2)

    def _stop(self, trainer: Any, row: Mapping[str, Any], finding: HealthWarning) -> None:
        message = finding.message
        if self.checkpoint is not None:
            saved = self.checkpoint.save_failure(trainer, row)
            if saved is not None:
                message += f" The failing state was saved to {saved} for inspection."
            last_good = getattr(self.checkpoint, "last_path", None)
            if last_good is not None:
                message += (
                    f" The last good checkpoint is {last_good}; resume from it with "
                    "`vecpg train --resume RUN_DIR` after changing the settings above."
                )
        raise NonFiniteError(message)
