"""The exceptions vecpg raises on purpose.

Every message says what went wrong and what to do next. ``assert`` is used only for
internal invariants; anything a user can cause raises one of these (or a plain
``ValueError``/``TypeError`` for bad arguments, as Gymnasium does).
"""

from __future__ import annotations


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

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nTraceback in the worker process:\n" + self.remote_traceback.rstrip()
        return text


class WorkerTimeoutError(WorkerError):
    """A worker did not answer within the configured timeout (a hung env)."""


class ConfigError(VecpgError):
    """An invalid configuration value; the message names the option and the valid range."""


class CheckpointError(VecpgError):
    """A checkpoint could not be read (corrupt, truncated, or from an incompatible run)."""


class NonFiniteError(VecpgError):
    """Training produced NaN or infinite values; the run stops after saving a checkpoint."""
