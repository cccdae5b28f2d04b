"""The run directory's files: written atomically, and rewound to a checkpoint on resume.

A run can be killed at any moment (Ctrl-C, SIGKILL, a full disk), so every file that a
later ``--resume`` reads is replaced whole or not at all: :func:`write_atomically` writes a
temporary file in the same directory, fsyncs it, renames it over the target and fsyncs the
directory. A run killed between checkpoints has logged rows past its last checkpoint;
:func:`rewind_log` drops them (and half-written last lines) so the resumed run's logs have
no duplicated or missing step.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vecpg.errors import CheckpointError


def write_atomically(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool = False
) -> None:
    """Replace ``path`` with what ``write(stream)`` writes, all or nothing.

    The file keeps the permission bits of the file it replaces (a new file gets the usual
    ``0o666 & ~umask``, not ``mkstemp``'s private ``0o600``). On any error the temporary
    file is removed and ``path`` is left as it was.

    Example:
        >>> import pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> write_atomically(path, lambda stream: stream.write("hello\\n"))
        >>> path.read_text()
        'hello\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        stream: IO[Any] = (
            os.fdopen(descriptor, "wb")
            if binary
            else os.fdopen(descriptor, "w", encoding="utf-8", newline="")
        )
        with stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def rewind_log(path: str | os.PathLike[str], step: int, *, step_field: str = "global_step") -> int:
    r"""Drop the records of a log whose ``step_field`` is after ``step``; atomically.

    ``path`` is a CSV file with a header (``metrics.csv``) or, by its ``.jsonl`` suffix, one
    JSON object a line (``health.jsonl``). Half-written lines (no newline, missing fields,
    unparsable) are dropped too. A missing file is fine.

    Returns:
        The number of records dropped.

    Raises:
        CheckpointError: a CSV log without a ``step_field`` column (it cannot be rewound to
            match the checkpoint).

    Example:
        >>> import pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = path.write_text("global_step,sps\n100,5\n200,5\n300,5\n")
        >>> rewind_log(path, 200), path.read_text()
        (1, 'global_step,sps\n100,5\n200,5\n')
        >>> path = path.with_name("health.jsonl")
        >>> _ = path.write_text('{"global_step": 10}\n{"global_step": 30}\n{"glo')
        >>> rewind_log(path, 20), path.read_text()
        (2, '{"global_step": 10}\n')
    """
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="", encoding="utf-8") as stream:
        lines = stream.read().splitlines(keepends=True)
    if not lines:
        return 0
    if path.suffix == ".jsonl":
        kept = [line for line in lines if _json_step(line, step_field) <= step]
    else:
        header = next(csv.reader([lines[0]]))
        if step_field not in header:
            raise CheckpointError(f"{path} has no {step_field!r} column to rewind by")
        column = header.index(step_field)
        kept = [lines[0]] + [line for line in lines[1:] if _csv_step(line, header, column) <= step]
    dropped = len(lines) - len(kept)
    if dropped:
        write_atomically(path, lambda stream: stream.writelines(kept))
    return dropped


def _json_step(line: str, step_field: str) -> float:
    """The line's step, or +inf for a line to drop (half-written or not a JSON object)."""
    try:
        record = json.loads(line)
        return float(record.get(step_field, 0)) if line.endswith("\n") else float("inf")
    except (ValueError, TypeError, AttributeError):
        return float("inf")


def _csv_step(line: str, header: list[str], column: int) -> float:
    """The row's step, or +inf for a row to drop (half-written or unparsable)."""
    fields = next(csv.reader([line]), [])
    if not line.endswith("\n") or len(fields) != len(header):
        return float("inf")
    try:
        return float(fields[column])
    except ValueError:
        return float("inf")
