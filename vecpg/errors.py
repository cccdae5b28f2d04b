"""The exceptions vecpg raises on purpose.

Every message says what went wrong and what to do next. ``assert`` is used only for
internal invariants; anything a user can cause raises one of these (or a plain
``ValueError``/``TypeError`` for bad arguments, as Gymnasium does).
"""

from __future__ import annotations

import errno
import functools
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

# errno values of file operations the environment refuses (a full disk, a read-only file
# system, permissions): not bugs, so the command line shows them as one line.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
REFUSED_BY_SYSTEM = (*DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM)


class VecpgError(Exception):
    """Base class of the errors vecpg raises on purpose."""


class WorkerError(VecpgError):
    """An environment raised inside a worker process, or a worker died.

    Attributes:
        worker_index: index of the worker process.
        env_index: global index of the env that failed (None if the worker itself failed).
        exception_type: name of the original exception type, e.g. ``"ZeroDivisionError"``.
        remote_traceback: the formatted traceback from the worker process.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_index: int | None = None,
        env_index: int | None = None,
        exception_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.worker_index = worker_index
        self.env_index = env_index
        self.exception_type = exception_type
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple:
        # A class from worker_error_class is rebuilt from the env's type (it has no import
        # path of its own), so the error survives pickling, e.g. out of a Ray actor.
        original = getattr(type(self), "_original_type", None)
        fields = (self.worker_index, self.env_index, self.exception_type, self.remote_traceback)
        message = self.args[0] if self.args else ""
        return _rebuild_worker_error, (
            original or type(self),
            original is not None,
            message,
            fields,
        )

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nTraceback in the worker process:\n" + self.remote_traceback.rstrip()
        return text


class WorkerTimeoutError(WorkerError, multiprocessing.TimeoutError):
    """A worker did not answer within the configured timeout (a hung env).

    Also a ``multiprocessing.TimeoutError``, what ``AsyncVectorEnv`` raises on a timeout.
    """


@functools.cache
def worker_error_class(original: type | None) -> type[WorkerError]:
    """:class:`WorkerError` that is also ``original``, the type an env raised, where it can be.

    So ``except ValueError`` catches an env's ``ValueError`` raised through a worker, as with
    ``AsyncVectorEnv`` (which re-raises the original type), and ``except WorkerError``
    catches every env failure. Types that cannot be combined (a base with its own instance
    layout, like ``OSError``, or an ``__init__`` that needs other arguments) give
    :class:`WorkerError` alone.

    Example:
        >>> error = worker_error_class(ValueError)("ValueError in env 0 (worker 0) during step")
        >>> isinstance(error, ValueError) and isinstance(error, WorkerError)
        True
    """
    if not (isinstance(original, type) and issubclass(original, Exception)):
        return WorkerError
    if issubclass(original, WorkerError):
        return original
    try:
        combined = type(original.__name__, (WorkerError, original), {"_original_type": original})
        combined("probe")  # an __init__ with required arguments fails here, not later
    except TypeError:
        return WorkerError
    combined.__module__ = original.__module__
    return combined


class ConfigError(VecpgError):
    """An invalid configuration value; the message names the option and the valid range."""


class CheckpointError(VecpgError):
    """A checkpoint could not be read (corrupt, truncated, or from an incompatible run)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is damaged (truncated, checksum mismatch, unreadable pickle)."""


class RunDirError(VecpgError):
    """A run directory cannot be used: it holds another run, is in use, a file, not
    writable, or full. The message names the path and what to do."""


class NonFiniteError(VecpgError):
    """Training produced NaN or infinite values; the run stops after saving a checkpoint."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by SIGTERM or SIGHUP (``kill``, docker, Slurm, a hangup).

    A subclass of KeyboardInterrupt on purpose: every path that handles Ctrl-C (the final
    checkpoint, reaping workers and Ray actors, closing the logs) handles it the same way,
    with no second code path to keep in step. ``vecpg`` then exits with 128 + the signal.

    Attributes:
        signal_number: the signal received.
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def refused_by_system(error: BaseException | None) -> OSError | None:
    """The OSError with an errno of :data:`REFUSED_BY_SYSTEM` in ``error``'s chain, if any.

    Libraries wrap such errors (torch.save raises its own error "during handling" of the
    OSError its write hit), so the cause and context chains are searched.

    >>> refused_by_system(RuntimeError("wrapped")) is None
    True
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in REFUSED_BY_SYSTEM:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def format_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> format_bytes(0), format_bytes(1536), format_bytes(3.2e9)
    ('0 B', '1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def free_space(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    current = Path(path).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    try:
        return shutil.disk_usage(current).free
    except OSError:
        return None


def describe_refused(error: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line for a file operation the system refused: where, why, and the free space.

    Args:
        error: the OSError (see :func:`refused_by_system`).
        path: the file meant (default ``error.filename``).

    Example:
        >>> describe_refused(OSError(errno.EROFS, "Read-only file system"), "runs/a")
        'cannot write runs/a: Read-only file system'
    """
    where = path if path is not None else error.filename
    reason = error.strerror or str(error) or type(error).__name__
    if where is None:
        return f"{reason} (a file operation refused by the system)"
    if error.errno in DISK_FULL:
        free = free_space(where)
        left = f" ({format_bytes(free)} free on its file system)" if free is not None else ""
        return f"{reason} while writing {where}{left}"
    if error.errno == errno.EACCES or error.errno == errno.EPERM:
        return f"cannot access {where}: {reason}"
    return f"cannot write {where}: {reason}"


def _rebuild_worker_error(
    cls: type, combined: bool, message: str, fields: tuple[Any, ...]
) -> WorkerError:
    worker_index, env_index, exception_type, remote_traceback = fields
    error_class = worker_error_class(cls) if combined else cls
    return error_class(
        message,
        worker_index=worker_index,
        env_index=env_index,
        exception_type=exception_type,
        remote_traceback=remote_traceback,
    )
