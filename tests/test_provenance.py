"""Benchmark provenance: the versions and commit each result line records."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy

from vecpg.bench.provenance import versions


def test_versions_of_installed_and_missing_packages_and_the_commit():
    found = versions(["numpy", "no-such-package-vecpg"])
    assert found["python"] == platform.python_version()
    assert found["numpy"] == numpy.__version__
    assert found["no-such-package-vecpg"] is None
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    assert found["vecpg_commit"] == (git.stdout.strip() or None)
