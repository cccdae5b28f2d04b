"""metrics.csv: one row per learner update, written by a trainer callback.

Columns are the row keys of :class:`vecpg.trainer.Trainer` in order: ``global_step``,
``time_s`` (seconds since the process started, so import and setup time count),
``sps``, ``episode_return_mean``, ``episode_length_mean`` (last 20 finished episodes),
``update``, ``episodes_finished``, then the learner's metrics.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, TextIO

import psutil

# The process start time, read once: psutil gives the OS's record, so time spent importing
# torch before this module loaded is counted too.
_PROCESS_START = psutil.Process().create_time()


def process_time_s() -> float:
    """Wall-clock seconds since this process started.

    Example:
        >>> process_time_s() > 0
        True
    """
    return time.time() - _PROCESS_START


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


class MetricsCSV:
    """Trainer callback writing each update's row to ``<run_dir>/metrics.csv``.

    The header is the first row's keys; a later row's extra keys are dropped and its
    missing keys left empty, so the file stays rectangular. Each row is flushed, so the
    file can be plotted while training runs.

    Args:
        path: the CSV file; default ``trainer.run_dir / "metrics.csv"`` at ``on_start``.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._stream: TextIO | None = None
        self._writer: csv.DictWriter | None = None

    def on_start(self, trainer: Any) -> None:
        if self.path is None:
            self.path = Path(trainer.run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_update(self, trainer: Any, row: dict[str, Any]) -> None:
        if self._writer is None:
            assert self.path is not None, "on_start was not called"
            # Append when resuming into an existing file with a header, else start fresh.
            append = self.path.exists() and self.path.stat().st_size > 0
            self._stream = open(self.path, "a" if append else "w", newline="")
            if append:
                with open(self.path, newline="") as existing:
                    fieldnames = next(csv.reader(existing))
            else:
                fieldnames = list(row)
            self._writer = csv.DictWriter(
                self._stream, fieldnames=fieldnames, extrasaction="ignore", restval=""
            )
            if not append:
                self._writer.writeheader()
        self._writer.writerow({key: _format(value) for key, value in row.items()})
        assert self._stream is not None
        self._stream.flush()

    def on_end(self, trainer: Any, summary: dict[str, Any] | None = None) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream, self._writer = None, None
