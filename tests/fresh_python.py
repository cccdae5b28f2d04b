"""Running a snippet in a fresh interpreter: for what the test process itself cannot show
(imports that already happened here, a process that must die, a fork server not yet started)."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -c code`` in a new process; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
