"""TensorBoard logging of every numeric metrics-row value (needs the ``tb`` extra).

Each numeric key of a row becomes a scalar against ``global_step``, grouped by section
(``rollout/``, ``time/``, ``losses/``, ``policy/``, ``train/``) so the TensorBoard page
opens on returns and losses rather than one long alphabetical list. ``tensorboard`` is
imported lazily; :func:`available` tells whether it is installed without importing it, so
``vecpg train --tensorboard`` can default on exactly when it would work.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vecpg.errors import ConfigError
from vecpg.run.health import nonfinite_values

INSTALL_HINT = "install the tb extra: pip install 'vecpg[tb]' (or pip install tensorboard)"
TENSORBOARD_SUBDIR = "tensorboard"

_SECTIONS = {
    "episode_return_mean": "rollout",
    "episode_length_mean": "rollout",
    "episodes_finished": "rollout",
    "truncations": "rollout",
    "terminations": "rollout",
    "sps": "time",
    "time_s": "time",
    "update": "time",
    "entropy": "policy",
    "approx_kl": "policy",
    "clip_fraction": "policy",
    "log_prob_mismatch": "policy",
    "nonfinite_log_probs": "policy",
}


def available() -> bool:
    """Whether the ``tb`` extra (tensorboard) is installed; does not import it.

    >>> isinstance(available(), bool)
    True
    """
    return importlib.util.find_spec("tensorboard") is not None


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a row key.

    >>> scalar_tag("episode_return_mean"), scalar_tag("value_loss"), scalar_tag("std_min")
    ('rollout/episode_return_mean', 'losses/value_loss', 'policy/std_min')
    """
    if key in _SECTIONS:
        return f"{_SECTIONS[key]}/{key}"
    if key.endswith("_loss"):
        return f"losses/{key}"
    if key.startswith(("std_", "log_std_")):
        return f"policy/{key}"
    return f"train/{key}"


def numeric_items(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric, finite values except ``global_step`` (the x axis).

    >>> numeric_items({"global_step": 10, "sps": 5.0, "env": "CartPole", "entropy": float("nan")})
    {'sps': 5.0}
    """
    items = {}
    for key, value in row.items():
        if key == "global_step" or isinstance(value, bool):
            continue
        if isinstance(value, numbers.Real) or _is_scalar_array(value):
            number = float(value)
            # NaN (e.g. no finished episode yet) would draw a gap-less spike to 0 in TB
            if math.isfinite(number):
                items[key] = number
    return items


def _is_scalar_array(value: Any) -> bool:
    # numpy scalars and one-element tensors, without importing numpy or torch here
    return getattr(value, "shape", None) == () and hasattr(value, "__float__")


class TensorBoardCallback:
    """Trainer callback writing each row's numeric values as TensorBoard scalars.

    Args:
        log_dir: where to write event files; default ``<run_dir>/tensorboard``.
        flush_secs: how often the writer flushes to disk.

    Raises:
        ConfigError: tensorboard is not installed (the message names the extra).
    """

    def __init__(self, log_dir: str | Path | None = None, *, flush_secs: int = 10) -> None:
        if not available():
            raise ConfigError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.flush_secs = flush_secs
        self.writer: Any = None

    def on_start(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.log_dir is None:
            self.log_dir = Path(trainer.run_dir) / TENSORBOARD_SUBDIR
        start_step = int(getattr(trainer, "global_step", 0) or 0)
        # On resume from a checkpoint at step S, the events a killed run wrote after S are
        # purged, so the curves show each step once (TensorBoard drops events with
        # step >= purge_step; the row at S itself was logged before the checkpoint).
        self.writer = SummaryWriter(
            log_dir=str(self.log_dir),
            flush_secs=self.flush_secs,
            purge_step=start_step + 1 if start_step > 0 else None,
        )

    def on_update(self, trainer: Any, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            self.on_start(trainer)
        from tensorboard.compat.proto.summary_pb2 import Summary

        # One event holding every scalar of the row: what add_scalar writes value by value
        # (simple_value scalars), at a tenth of its cost for a 40-value row.
        summary = Summary(
            value=[
                Summary.Value(tag=scalar_tag(key), simple_value=value)
                for key, value in numeric_items(row).items()
            ]
        )
        self.writer.file_writer.add_summary(summary, global_step=int(row["global_step"]))
        if nonfinite_values(row):
            # the run is about to stop with NonFiniteError: get the last curves on disk
            self.writer.flush()

    def on_end(self, trainer: Any, summary: Mapping[str, Any] | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
