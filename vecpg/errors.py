"""The exceptions vecpg raises on purpose.

Every message says what went wrong and what to do next. ``assert`` is used only for
internal invariants; anything a user can cause raises one of these (or a plain
``ValueError``/``TypeError`` for bad arguments, as Gymnasium does).
"""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any


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


class NonFiniteError(VecpgError):
    """Training produced NaN or infinite values; the run stops after saving a checkpoint."""


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
