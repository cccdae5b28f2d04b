"""What a benchmark figure was measured with: package versions and vecpg's commit."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


def versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Python's version, each of ``packages``' installed version (None where it is not
    installed) and ``vecpg_commit``, the short git commit of this checkout (None outside
    one), read from metadata and git without importing the packages.

    Example:
        >>> found = versions(["numpy", "no-such-package"])
        >>> found["no-such-package"] is None and "vecpg_commit" in found
        True
    """
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    found["vecpg_commit"] = commit or None
    return found
