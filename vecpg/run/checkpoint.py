"""Checkpoints: atomic writes, keep-last-K rotation, and loading that survives corruption.

Layout: ``<run_dir>/checkpoints/step_<global_step, 12 digits>.pt``, ordered by the step in
the file name (no "latest" pointer file that could itself be stale or half-written). A
state that went non-finite is saved beside them as ``nonfinite_step_<step>.pt``: kept for
inspection, never rotated out, never picked by :func:`load_latest` (resuming from NaN
weights would only fail again).

Atomicity: :func:`save` writes to a temporary file in the same directory, fsyncs it,
``os.replace``-s it over the final name and fsyncs the directory, so a crash at any point
leaves either the previous set of checkpoints or the new one, never a half-written
``step_*.pt``. Leftover temporary files from a crash are ignored and cleaned up later.

Integrity: a checkpoint is torch's zip format; :func:`load` first verifies every record's
CRC-32 with :mod:`zipfile` (torch itself does not, so a flipped byte in a tensor would
otherwise load silently), then unpickles with ``torch.load(weights_only=True)``.

What a state may hold under ``weights_only=True``: tensors, Python numbers/strings/None,
lists/tuples/dicts of them, and numeric numpy arrays/scalars (allowlisted below: numpy
RNG states and normalizer statistics are numpy arrays). Python's ``random.getstate()`` is
tuples of ints, fine. A config must be stored as a plain dict (``dataclasses.asdict``),
not as a dataclass instance. ``weights_only=False`` is available for trusted files only:
unpickling can run arbitrary code.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecpg.errors import (
    DISK_FULL,
    CheckpointError,
    CorruptCheckpointError,
    RunDirError,
    describe_refused,
    refused_by_system,
)
from vecpg.run.files import write_atomically

CHECKPOINT_SUBDIR = "checkpoints"
DEFAULT_KEEP_LAST = 3
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointWarning(UserWarning):
    """A checkpoint was unreadable and an older one was used instead."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its file, the global step in its name, and the state dict."""

    path: Path
    step: int
    state: dict[str, Any]


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / CHECKPOINT_SUBDIR


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``<run_dir>/checkpoints/step_<step>.pt``.

    >>> checkpoint_path("runs/demo", 4096).as_posix()
    'runs/demo/checkpoints/step_000000004096.pt'
    """
    return checkpoint_dir(run_dir) / f"step_{int(step):012d}.pt"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every regular checkpoint in ``run_dir``, oldest first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _STEP_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _save_state(state: Mapping[str, Any], path: Path) -> None:
    import torch

    write_atomically(path, lambda stream: torch.save(dict(state), stream), binary=True)


def save(
    state: Mapping[str, Any],
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    keep_last: int = DEFAULT_KEEP_LAST,
) -> Path:
    """Write ``state`` atomically as the checkpoint for ``step``; keep the last ``keep_last``.

    Args:
        state: the trainer's ``state_dict()``.
        run_dir: the run directory (checkpoints go in its ``checkpoints/``).
        step: the global env step the state belongs to.
        keep_last: how many regular checkpoints to keep (older ones are deleted after the
            new one is safely on disk); at least 1.

    Returns:
        The checkpoint's path.

    Raises:
        RunDirError: the file system refused the write (full, read-only, permissions);
            the message names the path and the free space. The previous checkpoints
            are left as they were.

    Example:
        >>> import tempfile, torch
        >>> run_dir = tempfile.mkdtemp()
        >>> for step in (100, 200, 300, 400):
        ...     _ = save({"global_step": step, "weights": torch.zeros(2)}, run_dir, step)
        >>> [step for step, _ in list_checkpoints(run_dir)]
        [200, 300, 400]
        >>> load_latest(run_dir).state["global_step"]
        400
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    path = checkpoint_path(run_dir, step)
    try:
        _save_state(state, path)
    except Exception as error:
        refused = refused_by_system(error)
        if refused is None:
            raise
        # Nothing was deleted yet: the older checkpoints are all still there.
        fix = "make room" if refused.errno in DISK_FULL else "make it writable"
        raise RunDirError(
            f"{describe_refused(refused, path)}; the previous checkpoints are intact: {fix}, "
            f"then continue with `vecpg train --resume {run_dir}`"
        ) from error
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    _remove_stale_temporaries(path.parent)
    return path


def save_failure(state: Mapping[str, Any], run_dir: str | os.PathLike[str], step: int) -> Path:
    """Save a state that went non-finite as ``nonfinite_step_<step>.pt`` (not rotated)."""
    path = checkpoint_dir(run_dir) / f"nonfinite_step_{int(step):012d}.pt"
    _save_state(state, path)
    return path


def _remove_stale_temporaries(directory: Path) -> None:
    # Only temporaries of other processes that died mid-write can be left here; ours were
    # renamed or unlinked. A concurrent writer to the same run dir is not supported.
    for leftover in directory.glob(".*.pt.*.tmp"):
        leftover.unlink(missing_ok=True)


def _numpy_safe_globals() -> list[Any]:
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    dtype_classes = getattr(np, "dtypes", None)
    if dtype_classes is not None:
        for name in dir(dtype_classes):
            # Numeric and bool dtypes only: object arrays would unpickle arbitrary objects.
            if name.endswith("DType") and name not in ("ObjectDType", "VoidDType"):
                allowed.append(getattr(dtype_classes, name))
    return allowed


def load(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """Load one checkpoint file, verifying it first.

    Args:
        path: a ``.pt`` file written by :func:`save`.
        map_location: passed to ``torch.load`` (``"cpu"`` so a GPU run resumes anywhere).
        weights_only: keep True unless you trust the file (see the module docstring).

    Raises:
        CorruptCheckpointError: the file is truncated, corrupt or not a checkpoint.
        CheckpointError: the file is missing, cannot be read, or holds objects that
            ``weights_only`` loading refuses.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as error:
        raise CorruptCheckpointError(
            f"checkpoint {path} is truncated or not a checkpoint ({error})"
        ) from error
    except OSError as error:  # not the file's fault (permissions, I/O): leave it alone
        raise CheckpointError(f"checkpoint {path} could not be read ({error})") from error
    if damaged is not None:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt (checksum mismatch in {damaged})"
        )
    try:
        if weights_only:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                state = torch.load(path, map_location=map_location, weights_only=True)
        else:
            state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        text = str(error)
        if "Unsupported global" in text or "Weights only load failed" in text:
            detail = next(
                (line.strip() for line in text.splitlines() if "Unsupported global" in line),
                text.splitlines()[0] if text else type(error).__name__,
            )
            raise CheckpointError(
                f"checkpoint {path} holds objects that safe loading refuses ({detail}). "
                "Store only tensors, numbers, strings, numpy arrays and dicts/lists of them "
                "in state_dict(); load with weights_only=False only if you trust the file."
            ) from error
        if refused_by_system(error) is not None:
            raise CheckpointError(f"checkpoint {path} could not be read ({error})") from error
        raise CorruptCheckpointError(f"checkpoint {path} could not be read ({error})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def corrupt_path(path: str | os.PathLike[str]) -> Path:
    """Where a corrupt checkpoint is moved aside: ``corrupt_<name>`` beside it.

    >>> corrupt_path("runs/demo/checkpoints/step_000000004096.pt").name
    'corrupt_step_000000004096.pt'
    """
    path = Path(path)
    return path.with_name(f"corrupt_{path.name}")


def load_latest(
    run_dir: str | os.PathLike[str],
    *,
    map_location: Any = "cpu",
    weights_only: bool = True,
    move_aside: bool = False,
) -> Checkpoint:
    """Load the newest readable checkpoint of ``run_dir``, falling back to older ones.

    An unreadable checkpoint (truncated, corrupt) is skipped with a
    :class:`CheckpointWarning` naming it and the reason; the next older one is tried.
    With ``move_aside`` (a run about to continue in ``run_dir``, holding its lock), a
    corrupt one is also renamed to :func:`corrupt_path`, kept for inspection: it is then
    no longer a candidate, and no longer counts toward the last K checkpoints kept.

    Raises:
        CheckpointError: no checkpoint exists, or none is readable (the message lists why
            each failed).
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"no checkpoint in {checkpoint_dir(run_dir)}: the run saved none yet "
            "(see --checkpoint-interval), or this is not a vecpg run directory"
        )
    failures = []
    for step, path in reversed(found):
        try:
            state = load(path, map_location=map_location, weights_only=weights_only)
        except CheckpointError as error:
            failures.append(str(error))
            moved = ""
            if move_aside and isinstance(error, CorruptCheckpointError):
                aside = corrupt_path(path)
                try:
                    os.replace(path, aside)
                    moved = f"; moved it aside to {aside.name}"
                except OSError as rename_error:
                    moved = f"; could not move it aside ({rename_error.strerror})"
            warnings.warn(
                f"{error}{moved}; falling back to the previous checkpoint",
                CheckpointWarning,
                stacklevel=2,
            )
            continue
        return Checkpoint(path, step, state)
    raise CheckpointError(
        f"none of the {len(found)} checkpoints in {checkpoint_dir(run_dir)} is readable: "
        + "; ".join(failures)
    )


def load_any(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", weights_only: bool = True
) -> Checkpoint:
    """Load a checkpoint file, or the latest readable one of a run directory.

    For commands that accept ``RUN_DIR_OR_CHECKPOINT`` (``vecpg eval``). A file given
    explicitly is not silently replaced by another one: an unreadable file raises.
    """
    path = Path(path)
    if path.is_dir():
        return load_latest(path, map_location=map_location, weights_only=weights_only)
    match = re.search(r"step_(\d+)\.pt$", path.name)
    state = load(path, map_location=map_location, weights_only=weights_only)
    step = int(match.group(1)) if match else int(state.get("global_step", 0) or 0)
    return Checkpoint(path, step, state)


def first_nonfinite_entry(state: Any, prefix: str = "") -> str | None:
    """Dotted key of the first floating tensor/array in ``state`` with a NaN/inf, or None.

    >>> import torch
    >>> first_nonfinite_entry({"policy": {"w": torch.zeros(2), "b": torch.tensor([float("nan")])}})
    'policy.b'
    >>> first_nonfinite_entry({"rng": torch.zeros(3, dtype=torch.uint8), "step": 5}) is None
    True
    """
    if isinstance(state, Mapping):
        for key, value in state.items():
            found = first_nonfinite_entry(value, f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            found = first_nonfinite_entry(value, f"{prefix}{index}.")
            if found is not None:
                return found
        return None
    is_floating = getattr(state, "is_floating_point", None)
    if is_floating is not None and is_floating():  # a torch tensor
        import torch

        return None if bool(torch.isfinite(state).all()) else prefix.rstrip(".")
    if isinstance(state, float) and not math.isfinite(state):
        return prefix.rstrip(".")
    return None


class CheckpointCallback:
    """Trainer callback: periodic checkpoints every ``interval_steps`` and a final one.

    On a row with non-finite values it saves the failing state with :func:`save_failure`
    (never into the rotation) and stops saving; :class:`~vecpg.run.health.HealthCallback`
    then raises. If the trainer calls ``on_end`` after such a failure, no final checkpoint
    is written, so ``--resume`` continues from the last good one.

    Args:
        interval_steps: save when ``global_step`` crosses a multiple of this; 0 or None
            saves only the final checkpoint.
        keep_last: regular checkpoints kept on disk.
        run_dir: where to save; default ``trainer.run_dir``.
        save_final: write a checkpoint in ``on_end``.

    Attributes:
        last_path: the latest good checkpoint written (None before the first).
        failure_path: where the non-finite state went (None if none).
        write_refused: a save failed because the file system refused it (full disk,
            read-only); no final checkpoint is attempted then.
    """

    def __init__(
        self,
        interval_steps: int | None,
        *,
        keep_last: int = DEFAULT_KEEP_LAST,
        run_dir: str | os.PathLike[str] | None = None,
        save_final: bool = True,
    ) -> None:
        if interval_steps is not None and interval_steps < 0:
            raise ValueError(f"interval_steps must be >= 0, got {interval_steps}")
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.interval_steps = interval_steps or 0
        self.keep_last = keep_last
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.save_final = save_final
        self.last_path: Path | None = None
        self.last_step: int | None = None
        self.failure_path: Path | None = None
        self.write_refused = False
        self._next_due = 0
        self._last_row_step: int | None = None

    def _schedule_after(self, step: int) -> None:
        if self.interval_steps:
            self._next_due = (step // self.interval_steps + 1) * self.interval_steps

    def on_start(self, trainer: Any) -> None:
        if self.run_dir is None:
            self.run_dir = Path(trainer.run_dir)
        start_step = int(getattr(trainer, "global_step", 0) or 0)
        self._schedule_after(start_step)
        # a resumed run's start step has its row in the metrics log already
        self._last_row_step = start_step if start_step > 0 else None

    def save_now(self, trainer: Any, step: int) -> Path:
        """Save ``trainer.state_dict()`` as the checkpoint of ``step`` now.

        A state holding non-finite floats (weights blown up in a way no metric showed, or
        an error raised mid-update) goes to :func:`save_failure` instead: resuming from
        it would only fail again.
        """
        assert self.run_dir is not None, "on_start was not called"
        state = trainer.state_dict()
        bad = first_nonfinite_entry(state)
        if bad is not None:
            self.failure_path = save_failure(state, self.run_dir, step)
            warnings.warn(
                f"the training state at step {step:,} holds non-finite values ({bad}); saved "
                f"it to {self.failure_path} for inspection, not as a resumable checkpoint",
                CheckpointWarning,
                stacklevel=2,
            )
            return self.failure_path
        try:
            self.last_path = save(state, self.run_dir, step, keep_last=self.keep_last)
        except RunDirError:
            self.write_refused = True  # no final checkpoint attempt into a full disk
            raise
        self.last_step = step
        self._schedule_after(step)
        return self.last_path

    def save_failure(self, trainer: Any, row: Mapping[str, Any]) -> Path | None:
        """Save the non-finite state once for inspection; return its path."""
        if self.failure_path is None:
            if self.run_dir is None:
                self.run_dir = Path(trainer.run_dir)
            step = int(row.get("global_step", 0) or 0)
            try:
                self.failure_path = save_failure(trainer.state_dict(), self.run_dir, step)
            except Exception as error:  # the NonFiniteError is what the user must see
                warnings.warn(
                    f"could not save the failing state: {error}", CheckpointWarning, stacklevel=2
                )
                return None
        return self.failure_path

    def on_update(self, trainer: Any, row: Mapping[str, Any]) -> None:
        from vecpg.run.health import nonfinite_values

        if self.failure_path is not None:
            return
        if nonfinite_values(row):
            self.save_failure(trainer, row)
            return
        step = int(row["global_step"])
        self._last_row_step = step
        if self.interval_steps and step >= self._next_due:
            self.save_now(trainer, step)

    def on_end(self, trainer: Any, summary: Mapping[str, Any] | None = None) -> None:
        if not self.save_final or self.failure_path is not None or self.write_refused:
            return
        step = int(getattr(trainer, "global_step", 0) or 0)
        if summary is not None and summary.get("global_step") is not None:
            step = int(summary["global_step"])
        stopped_by_error = str((summary or {}).get("stop_reason") or "").startswith("error")
        if stopped_by_error and step != self._last_row_step:
            # Interrupted (Ctrl-C, a crash) after a rollout but before its update's row:
            # that state's step has no metrics row and its rollout was never learned from,
            # so resuming from it would lose an update. The last checkpoint stays latest;
            # a state that went non-finite is still kept for inspection (save_now does).
            if first_nonfinite_entry(trainer.state_dict()) is not None:
                self.save_now(trainer, step)
            return
        if step != self.last_step:
            self.save_now(trainer, step)
