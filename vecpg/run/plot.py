"""Learning curves from run directories: episode return against env steps and wall time.

Reads each run's ``metrics.csv`` (columns ``global_step``, ``time_s``,
``episode_return_mean``, see CONTRACTS) with the csv module -- no pandas -- and draws the
runs overlaid with matplotlib's Agg backend (the ``plot`` extra), so it works on headless
machines. Rows whose return is empty or NaN (no episode finished yet) are skipped.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vecpg.errors import ConfigError

INSTALL_HINT = "install the plot extra: pip install 'vecpg[plot]' (or pip install matplotlib)"
METRICS_FILE = "metrics.csv"
REQUIRED_COLUMNS = ("global_step", "time_s", "episode_return_mean")
X_AXES = ("steps", "time", "both")
_LEGEND_INSIDE_MAX = 8  # runs; more get one legend beside the panels


@dataclass(frozen=True)
class Curve:
    """One run's learning curve: parallel lists of env steps, seconds and mean returns."""

    label: str
    steps: list[int]
    seconds: list[float]
    returns: list[float]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_curve(run_dir: str | os.PathLike[str], label: str | None = None) -> Curve:
    """Read ``run_dir/metrics.csv`` into a :class:`Curve`.

    Wall time restarts at 0 when a run is resumed in a new process; such restarts are
    stitched so the time axis keeps increasing.

    Raises:
        ConfigError: the directory, the file or a required column is missing.

    Example:
        >>> import tempfile, pathlib
        >>> run = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run / "metrics.csv").write_text(
        ...     "global_step,time_s,episode_return_mean\\n100,1.0,\\n200,2.0,15.5\\n")
        >>> curve = read_curve(run, "demo")
        >>> curve.steps, curve.seconds, curve.returns
        ([200], [2.0], [15.5])
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no {METRICS_FILE}: pass a run directory written by `vecpg train`"
        )
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path} lacks the column(s) {', '.join(missing)}")
        steps, seconds, returns = [], [], []
        offset, previous = 0.0, -math.inf
        for row in reader:
            time_s = _float(row["time_s"])
            if math.isfinite(time_s):
                if time_s + offset < previous:  # a resumed process restarted its clock
                    offset = previous
                previous = time_s + offset
            value, step = _float(row["episode_return_mean"]), _float(row["global_step"])
            if math.isfinite(value) and math.isfinite(step):
                steps.append(int(step))
                seconds.append(previous if math.isfinite(time_s) else math.nan)
                returns.append(value)
    default_label = run_dir.name if run_dir.is_dir() else run_dir.parent.name
    return Curve(label or default_label, steps, seconds, returns)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    names = [path.resolve().name for path in run_dirs]
    # two runs with the same directory name (e.g. .../seed1/run and .../seed2/run):
    # label them by the parent too
    return [
        name if names.count(name) == 1 else f"{path.resolve().parent.name}/{name}"
        for name, path in zip(names, run_dirs, strict=True)
    ]


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    x: str = "both",
    title: str | None = None,
) -> Path:
    """Write a PNG of episode return against env steps and/or wall time, runs overlaid.

    Args:
        run_dirs: run directories (each with a metrics.csv).
        out: the image file to write (format from the extension; PNG recommended).
        x: ``"steps"``, ``"time"`` or ``"both"`` (two panels).
        title: figure title (default: none).

    Returns:
        The path written.

    Raises:
        ConfigError: no run given, a bad run directory, a bad ``x``, an image format
            matplotlib cannot write, or matplotlib missing.
    """
    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if not run_dirs:
        raise ConfigError("give at least one run directory to plot")
    paths = [Path(run_dir) for run_dir in run_dirs]
    curves = [read_curve(path, label) for path, label in zip(paths, _labels(paths), strict=True)]
    if not any(curve.returns for curve in curves):
        raise ConfigError(
            "no finished episodes in " + ", ".join(str(path) for path in paths) + " yet"
        )
    try:
        import matplotlib
    except ImportError as error:
        raise ConfigError(f"vecpg plot needs matplotlib: {INSTALL_HINT}") from error
    matplotlib.use("Agg", force=True)  # headless: never try to open a window
    from matplotlib import pyplot
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise ConfigError(
            f"--out {out}: matplotlib cannot write .{suffix} files; use one of "
            + ", ".join(f".{name}" for name in sorted(formats))
        )
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a directory; give an image file name, e.g. {out}/returns.png"
        )

    panels = [("steps", "env steps"), ("time", "wall time (s)")]
    panels = [panel for panel in panels if x in (panel[0], "both")]
    figure, axes = pyplot.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False)
    try:
        for axis, (kind, xlabel) in zip(axes[0], panels, strict=True):
            for curve in curves:
                xs = curve.steps if kind == "steps" else curve.seconds
                axis.plot(xs, curve.returns, label=curve.label, linewidth=1.5)
            axis.set_xlabel(xlabel)
            axis.set_ylabel("episode return (mean of last episodes)")
            axis.grid(True, alpha=0.3)
            if len(curves) <= _LEGEND_INSIDE_MAX:
                axis.legend(fontsize="small")
        if len(curves) > _LEGEND_INSIDE_MAX:
            # A legend of many runs would hide the curves: one, right of the last panel.
            axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.04, 1.0))
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=110, bbox_inches="tight")
    finally:
        pyplot.close(figure)
    return out
