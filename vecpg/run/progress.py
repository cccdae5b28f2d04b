"""Live training progress: a one-line bar on a terminal, plain periodic lines otherwise.

On a TTY the bar (steps/total, steps per second, recent mean return, ETA) is redrawn in
place with ``\\r`` at most every ``refresh_s`` seconds, so redrawing never costs more than
a few writes per second however fast updates come. Elsewhere (CI logs, files) one plain
line is written every ``interval_s`` seconds, plus the first and the last update, so logs
stay short and greppable. No dependency: tqdm is not needed for one line.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from vecpg.run.health import trainer_total_steps

BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour); ``?`` when unknown.

    >>> format_duration(75), format_duration(3725), format_duration(float("inf"))
    ('1:15', '1:02:05', '?')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = math.ceil(seconds)  # an ETA that rounds down reaches 0:00 too early
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(row: Mapping[str, Any], key: str) -> float:
    try:
        return float(row.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def format_status(row: Mapping[str, Any], total_steps: int | None, *, bar: bool) -> str:
    """The progress text for one metrics row.

    >>> row = {"global_step": 25_000, "sps": 5000.0, "episode_return_mean": 87.25}
    >>> format_status(row, 100_000, bar=False)
    'step 25,000/100,000 (25%) | 5,000 sps | return 87.2 | ETA 0:15'
    >>> format_status(row, 100_000, bar=True)
    '[######                  ]  25% 25,000/100,000 | 5,000 sps | return 87.2 | ETA 0:15'
    """
    step = int(_number(row, "global_step") or 0)
    sps = _number(row, "sps")
    episode_return = _number(row, "episode_return_mean")
    returns = f"return {episode_return:.1f}" if math.isfinite(episode_return) else "return -"
    speed = f"{sps:,.0f} sps" if math.isfinite(sps) else "- sps"
    if total_steps:
        fraction = min(1.0, step / total_steps)
        remaining = max(0, total_steps - step)
        eta = remaining / sps if math.isfinite(sps) and sps > 0 else math.inf
        if bar:
            filled = int(round(fraction * BAR_WIDTH))
            head = f"[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] {fraction:4.0%} "
            head += f"{step:,}/{total_steps:,}"
        else:
            head = f"step {step:,}/{total_steps:,} ({fraction:.0%})"
        return f"{head} | {speed} | {returns} | ETA {format_duration(eta)}"
    return f"step {step:,} | {speed} | {returns}"


class ProgressCallback:
    """Trainer callback that shows training progress.

    Args:
        total_steps: planned env steps; default read from the trainer in ``on_start``.
        stream: where to write (default ``sys.stderr``, so stdout stays machine-readable).
        quiet: write nothing at all.
        interval_s: seconds between plain lines when the stream is not a TTY.
        refresh_s: minimum seconds between redraws of the TTY bar.
        tty: force the TTY/plain mode; default ``stream.isatty()``.
        clock: a monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        interval_s: float = 10.0,
        refresh_s: float = 0.1,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0 or refresh_s < 0:
            raise ValueError("interval_s and refresh_s must be non-negative")
        self.total_steps = total_steps
        self.stream = stream
        self.quiet = quiet
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.tty = tty
        self.clock = clock
        self._last_write: float | None = None
        self._last_row: Mapping[str, Any] | None = None
        self._last_row_written = False
        self._line_width = 0

    @property
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _is_tty(self) -> bool:
        if self.tty is None:
            isatty = getattr(self._out, "isatty", None)
            self.tty = bool(isatty and isatty())
        return self.tty

    def on_start(self, trainer: Any) -> None:
        if self.total_steps is None:
            self.total_steps = trainer_total_steps(trainer)

    def on_update(self, trainer: Any, row: Mapping[str, Any]) -> None:
        if self.quiet:
            return
        self._last_row = dict(row)
        self._last_row_written = False
        now = self.clock()
        wait = self.refresh_s if self._is_tty() else self.interval_s
        if self._last_write is not None and now - self._last_write < wait:
            return
        self._write(self._last_row)
        self._last_write = now

    def _write(self, row: Mapping[str, Any]) -> None:
        out = self._out
        if self._is_tty():
            text = format_status(row, self.total_steps, bar=True)
            # pad with spaces so a shorter line fully covers the previous one
            out.write("\r" + text.ljust(self._line_width))
            self._line_width = len(text)
        else:
            out.write(format_status(row, self.total_steps, bar=False) + "\n")
        out.flush()
        self._last_row_written = True

    def on_end(self, trainer: Any, summary: Mapping[str, Any] | None = None) -> None:
        if self.quiet:
            return
        if self._last_row is not None and not self._last_row_written:
            self._write(self._last_row)
        if self._is_tty() and self._line_width:
            self._out.write("\n")  # leave the final bar on screen; later output on new lines
            self._out.flush()
            self._line_width = 0
