"""Tests of vecpg.run.files: atomic replacement and log rewinding."""

from __future__ import annotations

import os
import stat

import pytest

from vecpg.errors import CheckpointError
from vecpg.run.files import rewind_log, write_atomically


def test_write_atomically_replaces_whole_and_keeps_permissions(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    write_atomically(path, lambda stream: stream.write("new\n"))
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.csv"]


def test_write_atomically_gives_a_new_file_the_umask_mode_not_private(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "new.bin", lambda stream: stream.write(b"\x00"), binary=True)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o644


def test_write_atomically_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"previous")

    def fail(stream):
        stream.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, fail, binary=True)
    assert path.read_bytes() == b"previous"
    assert [entry.name for entry in tmp_path.iterdir()] == ["state.pt"]


def test_rewind_csv_drops_rows_after_the_step_and_half_lines(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,sps\n100,5\n200,5\n300,5\n40")  # killed mid-line
    os.chmod(path, 0o644)
    assert rewind_log(path, 200) == 2
    assert path.read_text() == "global_step,sps\n100,5\n200,5\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert rewind_log(path, 200) == 0
    assert rewind_log(tmp_path / "missing.csv", 5) == 0
    (tmp_path / "other.csv").write_text("step\n1\n")
    with pytest.raises(CheckpointError, match="no 'global_step' column"):
        rewind_log(tmp_path / "other.csv", 0)


def test_rewind_jsonl_drops_later_unparsable_and_half_lines(tmp_path):
    path = tmp_path / "health.jsonl"
    path.write_text(
        '{"global_step": 10, "warning": "a"}\n'
        "not json\n"
        '{"global_step": 20}\n'
        '{"global_step": 30}\n'
        '{"global_step": 15'
    )
    assert rewind_log(path, 20) == 3
    assert path.read_text() == '{"global_step": 10, "warning": "a"}\n{"global_step": 20}\n'
