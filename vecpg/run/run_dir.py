"""Run directories: one run per directory, owned by one process at a time.

A run directory holds one run: ``config.yaml``, ``metrics.csv``, ``checkpoints/``,
``tensorboard/``, ``health.jsonl`` (:data:`RUN_FILES`). ``vecpg train`` claims it with
:func:`claim` before it writes anything:

- A fresh run refuses a directory that already holds a run, with a message that points to
  ``--resume``; ``overwrite=True`` (``--overwrite``) deletes the old run's files first,
  so its checkpoints, with their higher step numbers, cannot outrank the new run's.
- An exclusive ``fcntl.flock`` on ``RUN_DIR/.vecpg.lock`` is held for the life of the
  run, fresh or resumed. A second process on the same directory fails at once, naming
  the PID written in the lock file. The kernel drops the lock when the process ends,
  however it ends (SIGKILL included), so a lock file left behind never blocks anyone.
  It stays in a run directory: deleting it while another process has it open would let
  the two lock two different files of the same name.
- A path that is a file, or a directory that cannot be created or written, is a one-line
  :class:`~vecpg.errors.RunDirError`. A directory created by the claim and left holding
  nothing but the lock file (the run failed before it started) is removed again.

:func:`create_unique` gives default run directories names that never collide: it
creates the directory with a ``mkdir`` that fails if the name exists, and tries ``-2``,
``-3``... until one is new, so two runs started in the same second get different ones.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

from vecpg.errors import ConfigError, RunDirError
from vecpg.run.checkpoint import list_checkpoints

LOCK_FILE = ".vecpg.lock"
RUN_FILES = (
    "config.yaml",
    "config.json",
    "metrics.csv",
    "health.jsonl",
    "checkpoints",
    "tensorboard",
)

_HOLDER_WAIT_S = 1.0  # how long to wait for the holder to write its PID after locking


def create_unique(base: str | os.PathLike[str]) -> Path:
    """Create and return the directory ``base``, or ``base-2``, ``base-3``... if taken.

    Example:
        >>> import tempfile
        >>> base = Path(tempfile.mkdtemp()) / "run"
        >>> create_unique(base).name, create_unique(base).name
        ('run', 'run-2')
    """
    base = Path(base)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(
            f"cannot create run directory {base}: {error.strerror}; pass a writable --run-dir"
        ) from None
    for attempt in range(1, 10_000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise RunDirError(
                f"cannot create run directory {path}: {error.strerror}; pass a writable --run-dir"
            ) from None
        return path
    raise RunDirError(f"no free run directory name next to {base}; pass --run-dir")


def run_files(path: str | os.PathLike[str]) -> list[str]:
    """The files and folders of :data:`RUN_FILES` present in ``path``."""
    return [name for name in RUN_FILES if (Path(path) / name).exists()]


class RunDirLock:
    """A claimed run directory: holds the lock until :meth:`release` (or the ``with`` exit).

    Attributes:
        path: the run directory.
        created: the claim created the directory (it is removed again on release if
            nothing but the lock file was written into it).
        replaced: the old run's files and folders that ``overwrite`` deleted.
    """

    def __init__(self, path: Path, descriptor: int, created: bool, top: Path | None = None) -> None:
        self.path = path
        self.created = created
        self._top = top or path  # the outermost directory the claim created
        self.replaced: list[str] = []
        self._descriptor: int | None = descriptor

    def release(self) -> None:
        """Drop the lock (idempotent); remove the directory if the run never wrote to it."""
        if self._descriptor is None:
            return
        try:
            if self.created and os.listdir(self.path) == [LOCK_FILE]:
                # Still under the lock: no other process can be using the directory.
                os.unlink(self.path / LOCK_FILE)
                _remove_empty_directories(self.path, self._top)
        except OSError:
            pass  # an empty directory left behind is harmless
        finally:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _holder_pid(descriptor: int) -> str:
    """The PID the holder wrote into the lock file (it writes it right after locking)."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit() or time.monotonic() > deadline:
            return text if text.isdigit() else "unknown"
        time.sleep(0.01)


def _describe_run(path: Path, present: list[str]) -> tuple[str, bool]:
    """What the old run left (for the message) and whether it has a checkpoint to resume."""
    found = list_checkpoints(path)
    names = [name for name in present if name != "checkpoints"]
    if found:
        names.append(f"checkpoints up to step {found[-1][0]:,}")
    return ", ".join(names) or "an empty checkpoints/", bool(found)


def _remove_run(path: Path, present: list[str]) -> None:
    for name in present:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def claim(
    path: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    created: bool = False,
) -> RunDirLock:
    """Take ``path`` for one run: create it if needed, lock it, check it is free.

    Args:
        path: the run directory.
        resume: the run in ``path`` is being continued: it must exist and is not refused
            for holding a run.
        overwrite: a fresh run may replace the run in ``path``; its files are deleted
            (under the lock) before returning.
        created: the caller created ``path`` for this run (e.g. :func:`create_unique`).

    Returns:
        The held :class:`RunDirLock`; release it when the run ends.

    Raises:
        RunDirError: ``path`` is a file, cannot be created or written, is locked by
            another process, or (fresh run, no ``overwrite``) already holds a run.
        ConfigError: ``resume`` and ``path`` is not a directory.
    """
    path = Path(path)
    if resume and not path.is_dir():
        raise ConfigError(f"--resume {str(path)!r}: no such run directory")
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"--run-dir {path} is an existing file, not a directory; give the path of a "
            "directory (it is created if missing)"
        )
    top = None
    if not path.exists():
        top = path.absolute()
        while not top.parent.exists():
            top = top.parent
        try:
            path.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass  # created by a concurrent run a moment ago: the lock decides
        except OSError as error:
            raise RunDirError(
                f"cannot create run directory {path}: {error.strerror}; pass a --run-dir "
                "where you can write"
            ) from None
    try:
        descriptor = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if created:
            _remove_empty_directories(path, top or path)
        raise RunDirError(
            f"run directory {path} is not writable ({error.strerror}); make it writable or "
            "pass another --run-dir"
        ) from None
    lock = RunDirLock(path, descriptor, created, top)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(descriptor)
            lock.created = False  # the directory is the other process's now
            raise RunDirError(
                f"run directory {path} is in use by another vecpg process (PID {holder}); "
                "wait for it to end, stop it, or pass another --run-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunDirError(
                f"run directory {path} is not writable; make it writable or pass another --run-dir"
            )
        present = [] if resume else run_files(path)
        if present and not overwrite:
            what, resumable = _describe_run(path, present)
            hint = (
                f"continue it with `vecpg train --resume {path}`, pass another --run-dir"
                if resumable
                else "it has no checkpoint to resume from; pass another --run-dir"
            )
            raise RunDirError(
                f"run directory {path} already holds a run ({what}): {hint}, or add "
                "--overwrite to delete it and start over"
            )
        if present:
            _remove_run(path, present)
            lock.replaced = present
    except BaseException:
        lock.release()
        raise
    return lock


def _remove_empty_directories(path: Path, top: Path) -> None:
    """Remove ``path`` and its parents up to ``top`` while they are empty."""
    path, top = path.absolute(), top.absolute()
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top or top not in path.parents:
            return
        path = path.parent
