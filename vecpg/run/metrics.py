"""metrics.csv: one row per learner update, written by a trainer callback.

Columns are the row keys of :class:`vecpg.run.trainer.Trainer` in order: ``global_step``,
``time_s`` (seconds since the process started, so import and setup time count),
``sps``, ``episode_return_mean``, ``episode_length_mean`` (last 20 finished episodes),
``update``, ``episodes_finished``, then the learner's metrics, ``sampling_time_s`` and
``update_time_s`` (wall seconds of the rollout and of the update) and, on CUDA,
``gpu_memory_mib``. :data:`WALL_CLOCK_COLUMNS` differ between otherwise identical runs.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO

import psutil

#: Columns measured with the clock; every other column is the same in two runs with the
#: same seed and config (on the CPU).
WALL_CLOCK_COLUMNS = ("time_s", "sps", "sampling_time_s", "update_time_s", "gpu_memory_mib")


def _seconds_since_process_start() -> float:
    """Seconds since this process started, read once at import.

    On Linux, /proc gives the start time in clock ticks since boot and /proc/uptime the
    time since boot, both to 10 ms; psutil's create_time() adds the boot time, which is
    rounded to the second, so it can be up to 1 s off: too coarse for solve-time figures.
    """
    try:
        with open("/proc/self/stat") as stream:
            # Field 22 (starttime); split after the ")" that ends the command name.
            fields = stream.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime") as stream:
            uptime = float(stream.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.Process().create_time()


_ELAPSED_AT_IMPORT = _seconds_since_process_start()
_PERF_AT_IMPORT = time.perf_counter()


def process_time_s() -> float:
    """Wall-clock seconds since this process started (import and setup time included).

    Example:
        >>> process_time_s() > 0
        True
    """
    return _ELAPSED_AT_IMPORT + time.perf_counter() - _PERF_AT_IMPORT


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
        # A resumed run (global_step > 0) appends to its file; a fresh run starts a new one.
        if int(getattr(trainer, "global_step", 0) or 0) == 0 and self.path.exists():
            self.path.unlink()

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
