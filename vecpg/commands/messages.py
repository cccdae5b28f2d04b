"""How commands show what happens to a user: warnings as one ``vecpg: warning: ...`` line.

Python's default warning format (file:line, then the source line of the ``warn`` call)
tells a user of the command line nothing; the warnings vecpg raises for a user
(:class:`~vecpg.run.checkpoint.CheckpointWarning`,
:class:`~vecpg.run.health.TrainingHealthWarning`) are printed as one line instead, by
every command that can raise them (``train``, ``eval``).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO


@contextlib.contextmanager
def warnings_as_lines(progress: Any = None) -> Iterator[None]:
    """Print vecpg's user-facing warnings as ``vecpg: warning: ...`` lines on stderr.

    Args:
        progress: the run's :class:`~vecpg.run.progress.ProgressCallback`, if any: a bar
            being redrawn on a terminal is ended first so the warning does not overwrite
            it.
    """
    from vecpg.run.checkpoint import CheckpointWarning
    from vecpg.run.health import TrainingHealthWarning

    ours = (CheckpointWarning, TrainingHealthWarning)
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if not issubclass(category, ours):
                original(message, category, filename, lineno, file, line)
                return
            # the progress bar's private width: nonzero while a \r-bar is on the line
            if progress is not None and progress._line_width:
                sys.stderr.write("\n")
                progress._line_width = 0
            sys.stderr.write(f"vecpg: warning: {message}\n")
            sys.stderr.flush()

        warnings.showwarning = show
        for category in ours:
            warnings.simplefilter("always", category)  # each is already raised once
        yield
