"""The README's vector-env examples, saved as scripts and run as a user would run them.

A script, not an import: with the default forkserver start method every worker imports
the main script, which is what an example without a ``__main__`` guard gets wrong.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_EXAMPLE = re.compile(r"<!-- test:vector-example -->\n```python\n(.*?)```", re.DOTALL)


def examples() -> list[str]:
    return _EXAMPLE.findall(README.read_text())


def test_the_readme_has_vector_examples():
    assert len(examples()) >= 2


@pytest.mark.timeout(180)
@pytest.mark.parametrize("index", range(2))
def test_a_readme_example_runs_as_a_script(tmp_path, index):
    script = tmp_path / "example.py"
    script.write_text(examples()[index])
    path = os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=path),
    )
    assert run.returncode == 0, run.stderr
