"""Gymnasium's own vector tests, run with ``SubprocVectorEnv`` in ``AsyncVectorEnv``'s place.

The tests are not in Gymnasium's wheel or sdist; take them from a source checkout of the
installed version::

    git clone --depth 1 -b v1.4.0 https://github.com/Farama-Foundation/Gymnasium /tmp/Gymnasium
    python benchmarks/gymnasium_suite.py /tmp/Gymnasium
    python benchmarks/gymnasium_suite.py /tmp/Gymnasium -- -k async   # extra pytest arguments

The script runs the same test files twice, once as they are and once with
``gymnasium.vector.AsyncVectorEnv`` (also what ``gym.make_vec(..., "async")`` builds)
replaced by :class:`vecpg.SubprocVectorEnv`, then prints how many of the tests that
pass with ``AsyncVectorEnv`` also pass with vecpg, and the names of those that do not.
Only the tests that build an ``AsyncVectorEnv`` are counted (their node id does not name
``Sync``/``SYNC``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEST_FILES = [
    "tests/vector/test_async_vector_env.py",
    "tests/vector/test_vector_env.py",
    "tests/vector/test_autoreset_mode.py",
]
REPOSITORY = Path(__file__).resolve().parent.parent


def pytest_configure(config: object) -> None:
    """Pytest hook (this module is loaded as a plugin): swap in vecpg when asked to."""
    if os.environ.get("VECPG_GYMNASIUM_SUITE") != "vecpg":
        return
    import gymnasium.vector
    import gymnasium.vector.async_vector_env

    from vecpg import SubprocVectorEnv

    gymnasium.vector.AsyncVectorEnv = SubprocVectorEnv  # type: ignore[misc]
    gymnasium.vector.async_vector_env.AsyncVectorEnv = SubprocVectorEnv  # type: ignore[misc]


def run(checkout: Path, subject: str, extra: list[str]) -> dict[str, str]:
    """Node id -> outcome (``passed``, ``failed``, ``skipped``...) for one subject."""
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.txt"
        environment = dict(os.environ, VECPG_GYMNASIUM_SUITE=subject)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(checkout), str(REPOSITORY), str(Path(__file__).parent)]
        )
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "gymnasium_suite", "-p", "no:cacheprovider",
            "-rA", "--timeout=120" if _has_timeout_plugin() else "-q", *TEST_FILES, *extra,
        ]  # fmt: skip
        with report.open("w") as out:
            subprocess.run(command, cwd=checkout, env=environment, stdout=out, stderr=out)
        outcomes = {}
        for line in report.read_text().splitlines():
            word, _, rest = line.partition(" ")
            if word in ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS"):
                node = rest.split(" - ")[0].strip()
                outcomes[node] = word.lower()
        return outcomes


def _has_timeout_plugin() -> bool:
    try:
        import pytest_timeout  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a Gymnasium source checkout (has tests/)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()
    reference = run(args.checkout, "gymnasium", args.pytest_args)
    ours = run(args.checkout, "vecpg", args.pytest_args)
    counted = [node for node in reference if "Sync" not in node and "SYNC" not in node]
    passing = [node for node in counted if reference[node] == "passed"]
    kept = [node for node in passing if ours.get(node) == "passed"]
    print(f"AsyncVectorEnv passes {len(passing)} of {len(counted)} counted tests")
    print(f"SubprocVectorEnv passes {len(kept)} of those ({100 * len(kept) / len(passing):.1f}%)")
    for node in sorted(set(passing) - set(kept)):
        print(f"  not kept: {node} ({ours.get(node, 'missing')})")


if __name__ == "__main__":
    main()
