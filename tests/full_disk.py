"""A full disk, simulated: binary files opened with ``os.fdopen`` refuse writes (ENOSPC)."""

from __future__ import annotations

import errno
import os


class DiskFullStream:
    """A file whose writes fail with ENOSPC once ``room`` more bytes would not fit."""

    def __init__(self, stream, room: int) -> None:
        self._stream, self._room = stream, room

    def write(self, data) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._stream.write(data)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._stream.close()


def fill_the_disk(monkeypatch, *, after_files: int = 0, room: int = 1000) -> None:
    """Binary files opened with os.fdopen after the first ``after_files`` get ``room`` bytes."""
    real_fdopen, opened = os.fdopen, []

    def fdopen(descriptor, mode="r", *arguments, **options):
        stream = real_fdopen(descriptor, mode, *arguments, **options)
        if "b" not in mode or "w" not in mode:
            return stream
        opened.append(descriptor)
        return stream if len(opened) <= after_files else DiskFullStream(stream, room)

    monkeypatch.setattr(os, "fdopen", fdopen)
