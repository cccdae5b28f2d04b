"""Running a snippet in a fresh interpreter: for what the test process itself cannot show
(imports that already happened here, a process that must die, a fork server not yet started)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -c code`` in a new process; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


def train_compiled(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess:
    """``vecpg train --compile`` for 256 Pendulum steps in a new process, with ``environment``
    added to its variables and an empty inductor cache: it compiles for real (a cached
    graph needs neither torch's compile threads nor a C++ compiler)."""
    variables = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-m", "vecpg", "train", "--env", "Pendulum-v1", "--total-steps", "256",
         "--num-envs", "2", "--num-steps", "64", "--vector", "sync", "--compile", "--quiet",
         "--no-tensorboard", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, env=variables,
    )  # fmt: skip
