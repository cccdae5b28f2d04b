"""``vecpg doctor``: a self-check a new user runs first.

Reports the versions, usable CPU cores, CUDA, /dev/shm space and the C++ compiler that
``--compile`` needs on the CPU, then runs two checks,
each printed as one PASS/FAIL line:

1. the vector env: vecpg's :class:`~vecpg.vector.env.SubprocVectorEnv` gives exactly the
   observations, rewards and termination/truncation flags of Gymnasium's
   ``SyncVectorEnv`` on CartPole for seeded random actions, in both autoreset modes
   (this exercises worker processes and shared memory on this machine);
2. the learning loop: a short PPO run on CartPole (sampling -> log_prob -> update) must
   raise the mean episode return well above a random policy's, with stored and
   recomputed log_probs agreeing and nothing non-finite.

The whole doctor takes well under a minute on 2 cores. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata

from vecpg.vector.worker_defaults import usable_cores

HELP = "check this machine: versions, cores, CUDA, shared memory, vector env, learning"
DESCRIPTION = (
    "Self-check for a new install: prints versions, usable CPU cores, CUDA availability "
    "and /dev/shm free space, then checks that vecpg's vector env matches Gymnasium's "
    "SyncVectorEnv step for step on CartPole and that a short PPO run on CartPole learns. "
    "One PASS/FAIL line per check; exit status 1 if any check fails."
)

VECTOR_STEPS = 300
# A random CartPole policy averages ~22; the run stops as soon as it reaches the target.
LEARNING_TARGET_RETURN = 150.0
LEARNING_MAX_STEPS = 60_000
LOW_SHM_BYTES = 256 * 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-learning",
        action="store_true",
        help="skip the short PPO learning run (the slowest check, ~10 s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the checks' envs and actions"
    )


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def cpp_compiler_line() -> str:
    """Whether ``--compile`` can build CPU kernels: inductor compiles them with ``$CXX``
    (default ``g++``), so a missing compiler fails the first update of a compiled run."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        return f"{name} not found: --compile fails on the CPU (install g++ or set CXX)"
    return f"{path} (--compile can build CPU kernels)"


def report_lines() -> list[tuple[str, str]]:
    """(name, value) pairs describing this machine."""
    import numpy
    import torch

    import vecpg

    lines = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("vecpg", vecpg.__version__),
        ("torch", torch.__version__),
        ("gymnasium", _version("gymnasium")),
        ("numpy", numpy.__version__),
        ("platform", platform.platform()),
        ("cpu cores", f"{usable_cores()} usable (of {os.cpu_count()})"),
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(("cuda", f"available: {', '.join(names)} (CUDA {torch.version.cuda})"))
    else:
        lines.append(("cuda", "not available (training runs on CPU)"))
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        lines.append(("/dev/shm", "not found (shared memory falls back to the OS default)"))
    else:
        note = (
            " (low: many or large envs may fail; enlarge it)" if usage.free < LOW_SHM_BYTES else ""
        )
        lines.append(("/dev/shm", f"{_gib(usage.free)} free of {_gib(usage.total)}{note}"))
    lines.append(("c++ compiler", cpp_compiler_line()))
    extras = {"tensorboard": "tb", "matplotlib": "plot", "yaml": "yaml", "ray": "ray"}
    installed = []
    for module, extra in extras.items():
        import importlib.util

        if importlib.util.find_spec(module) is not None:
            installed.append(extra)
    lines.append(("extras", ", ".join(installed) or "none"))
    return lines


def check_vector_env(seed: int = 0, steps: int = VECTOR_STEPS) -> str:
    """SubprocVectorEnv == SyncVectorEnv on CartPole for seeded random actions.

    Returns the PASS detail; raises AssertionError with the first difference otherwise.
    """
    import gymnasium as gym
    import numpy as np

    from vecpg.vector.make import make_vec

    num_envs, num_workers = 4, 2
    for mode in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
        reference = gym.vector.SyncVectorEnv(
            [lambda: gym.make("CartPole-v1")] * num_envs, autoreset_mode=mode
        )
        candidate = make_vec("CartPole-v1", num_envs, num_workers=num_workers, autoreset_mode=mode)
        try:
            candidate.action_space.seed(seed)
            expected, _ = reference.reset(seed=seed)
            actual, _ = candidate.reset(seed=seed)
            np.testing.assert_array_equal(actual, expected, err_msg=f"{mode.value}: reset")
            episodes = 0
            for step in range(steps):
                actions = candidate.action_space.sample()
                want = reference.step(actions)[:4]
                got = candidate.step(actions)[:4]
                for name, left, right in zip(
                    ("observations", "rewards", "terminations", "truncations"),
                    got,
                    want,
                    strict=True,
                ):
                    np.testing.assert_array_equal(
                        left, right, err_msg=f"{mode.value} mode, step {step}: {name} differ"
                    )
                episodes += int(np.sum(want[2] | want[3]))
        finally:
            candidate.close()
            reference.close()
        assert episodes > 0, "no episode ended: autoreset was not exercised"
    return (
        f"{num_envs} CartPole envs on {num_workers} workers, {steps} seeded random steps, "
        "next-step and same-step autoreset: identical observations, rewards and flags"
    )


def check_learning(seed: int = 0) -> str:
    """A short PPO run on CartPole must improve; returns the PASS detail."""
    import math
    import tempfile

    from vecpg.run.config import resolve_config
    from vecpg.run.health import HealthCallback
    from vecpg.run.trainer import Trainer

    class FirstReturn:
        value = math.nan

        def on_update(self, trainer, row):
            if math.isnan(self.value) and not math.isnan(row["episode_return_mean"]):
                self.value = row["episode_return_mean"]

    config = resolve_config(
        cli_values={
            "env": "CartPole-v1",
            "algo": "ppo",
            "seed": seed,
            "total_steps": LEARNING_MAX_STEPS,
            "stop_at_return": LEARNING_TARGET_RETURN,
        }
    )
    first, health = FirstReturn(), HealthCallback(emit=False)
    with tempfile.TemporaryDirectory(prefix="vecpg-doctor-") as run_dir:
        summary = Trainer(config, run_dir, callbacks=[first, health]).train()
    final = summary["episode_return_mean"]
    problems = [
        w.message for w in health.warnings if w.condition in ("nonfinite", "log_prob_mismatch")
    ]
    assert not problems, problems[0]
    assert final >= LEARNING_TARGET_RETURN, (
        f"mean return {first.value:.1f} -> {final:.1f} after {summary['global_step']:,} steps, "
        f"below the target {LEARNING_TARGET_RETURN:g}: sampling -> log_prob -> update does "
        "not learn on this install"
    )
    return (
        f"PPO on CartPole-v1: mean return {first.value:.1f} -> {final:.1f} in "
        f"{summary['global_step']:,} steps ({summary['sps']:,.0f} steps/s)"
    )


def run_check(name: str, check: Callable[[], str], out=None) -> bool:
    """Run one check, print ``PASS``/``FAIL`` with details and its time; True if it passed."""
    out = out or sys.stdout
    start = time.perf_counter()
    try:
        detail = check()
    except Exception as error:  # a check reports every failure as FAIL, never crashes doctor
        elapsed = time.perf_counter() - start
        reason = str(error).strip() or type(error).__name__
        print(f"  FAIL  {name} ({elapsed:.1f} s): {type(error).__name__}: {reason}", file=out)
        if not isinstance(error, AssertionError):
            tail = traceback.format_exception(type(error), error, error.__traceback__)[-3:]
            print("        " + "".join(tail).replace("\n", "\n        ").rstrip(), file=out)
        return False
    print(f"  PASS  {name} ({time.perf_counter() - start:.1f} s): {detail}", file=out)
    return True


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    print("vecpg doctor")
    lines = report_lines()
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"  {name:<{width}}  {value}")
    print("checks")
    checks: list[tuple[str, Callable[[], str]]] = [
        ("vector env", lambda: check_vector_env(args.seed)),
    ]
    if not args.skip_learning:
        checks.append(("learning", lambda: check_learning(args.seed)))
    results = [run_check(name, check) for name, check in checks]
    elapsed = time.perf_counter() - start
    failed = results.count(False)
    if failed:
        print(f"doctor: {failed} of {len(results)} checks FAILED ({elapsed:.1f} s)")
        return 1
    print(f"doctor: all {len(results)} checks passed ({elapsed:.1f} s)")
    return 0
