"""Stable-Baselines3's own vec-env tests, run with ``vecpg.sb3.SubprocVecEnv`` in its place.

The tests ship in SB3's sdist on PyPI. The script downloads the sdist of the installed SB3
version (``pip download``), takes ``tests/test_vec_envs.py`` from it and runs it twice: as
it is, and with ``stable_baselines3.common.vec_env.SubprocVecEnv`` replaced by
:class:`vecpg.sb3.SubprocVecEnv` before the tests are collected. It prints how many of the
``SubprocVecEnv`` tests that pass with SB3's class also pass with vecpg's, and the names of
those that do not::

    python benchmarks/sb3_suite.py                 # needs pip install -e ".[sb3,test]"
    python benchmarks/sb3_suite.py -- -k custom    # extra pytest arguments
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

TEST_FILE = "tests/test_vec_envs.py"
REPOSITORY = Path(__file__).resolve().parent.parent


def pytest_configure(config: object) -> None:
    """Pytest hook (this module is loaded as a plugin): swap in vecpg's class when asked to."""
    if os.environ.get("VECPG_SB3_SUITE") != "vecpg":
        return
    import stable_baselines3.common.vec_env as vec_env

    from vecpg.sb3 import SubprocVecEnv

    vec_env.SubprocVecEnv = SubprocVecEnv  # type: ignore[misc]


def fetch_tests(directory: Path) -> Path:
    """Download the installed SB3 version's sdist into ``directory``; return its test file."""
    version = metadata.version("stable-baselines3")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
         ":all:", f"stable-baselines3=={version}", "-d", str(directory)],
        check=True,
    )  # fmt: skip
    archive = next(directory.glob("stable_baselines3-*.tar.gz"))
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(TEST_FILE))
        tar.extract(member, directory, filter="data")
    return directory / member.name


def run(test_file: Path, which: str, extra: list[str]) -> dict[str, str]:
    """Node id -> outcome of every test in ``test_file`` with ``which`` class."""
    report = test_file.parent / f"report-{which}.txt"
    path = f"{REPOSITORY / 'benchmarks'}{os.pathsep}{REPOSITORY}"  # this plugin, and vecpg
    environment = {**os.environ, "VECPG_SB3_SUITE": which, "PYTHONPATH": path}
    subprocess.run(
        [sys.executable, "-m", "pytest", str(test_file), "-q", "-rA", "-p", "sb3_suite",
         "-p", "no:cacheprovider", "--rootdir", str(test_file.parent), *extra],
        env=environment,
        stdout=report.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    outcomes = {}
    for line in report.read_text().splitlines():
        word, _, node = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED") and "::" in node:
            outcomes[node.split(" - ")[0]] = word
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vecpg-sb3-suite-") as scratch:
        test_file = fetch_tests(Path(scratch))
        theirs = run(test_file, "sb3", args.pytest_args)
        ours = run(test_file, "vecpg", args.pytest_args)
    subproc = [node for node in theirs if "Subproc" in node]
    passing = [node for node in subproc if theirs[node] == "PASSED"]
    kept = [node for node in passing if ours.get(node) == "PASSED"]
    print(f"SubprocVecEnv tests: {len(subproc)}; SB3's class passes {len(passing)}; ", end="")
    print(f"vecpg.sb3.SubprocVecEnv passes {len(kept)} of those")
    for node in sorted(set(passing) - set(kept)):
        print(f"  not with vecpg: {node} ({ours.get(node, 'not run')})")
    return 0 if len(kept) == len(passing) else 1


if __name__ == "__main__":
    sys.exit(main())
