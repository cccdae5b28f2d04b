"""`vecpg doctor`: the report, PASS/FAIL per check, exit status, and that checks catch faults."""

from __future__ import annotations

import time

import gymnasium as gym
import pytest

from vecpg.commands import doctor
from vecpg.commands.cli import main


@pytest.mark.slow
def test_doctor_passes_on_this_machine(capsys):
    start = time.perf_counter()
    assert main(["doctor"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    for name in ("python", "vecpg", "torch", "gymnasium", "numpy", "cpu cores", "cuda", "/dev/shm"):
        assert f"  {name} " in out
    assert "usable (of" in out and "GiB free" in out
    assert "PASS  vector env" in out and "identical observations" in out
    assert "PASS  learning" in out and "mean return" in out
    assert "FAIL" not in out and "doctor: all 2 checks passed" in out
    assert elapsed < 60


def test_report_says_whether_compile_has_a_cpp_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    assert doctor.cpp_compiler_line().endswith(
        "not found: --compile fails on the CPU (install g++ or set CXX)"
    )
    compiler = tmp_path / "g++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    assert doctor.cpp_compiler_line() == f"{compiler} (--compile can build CPU kernels)"
    assert ("c++ compiler", doctor.cpp_compiler_line()) in doctor.report_lines()


def test_skip_learning(capsys):
    assert main(["doctor", "--skip-learning"]) == 0
    out = capsys.readouterr().out
    assert (
        "PASS  vector env" in out and "learning" not in out.split("checks")[1].split("doctor:")[0]
    )
    assert "doctor: all 1 checks passed" in out


def test_a_failing_check_gives_fail_line_and_nonzero_exit(monkeypatch, capsys):
    def broken(seed):
        raise RuntimeError("workers could not start")

    monkeypatch.setattr(doctor, "check_vector_env", broken)
    assert main(["doctor", "--skip-learning"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  vector env" in out and "RuntimeError: workers could not start" in out
    assert "doctor: 1 of 1 checks FAILED" in out


def test_vector_check_detects_a_mismatch(monkeypatch):
    import vecpg.vector.make

    def wrong_vector_env(env_id, num_envs, *, num_workers=None, autoreset_mode=None):
        # an env that truncates earlier than the reference: the check must notice
        make = lambda: gym.make(env_id, max_episode_steps=20)  # noqa: E731
        return gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=autoreset_mode)

    monkeypatch.setattr(vecpg.vector.make, "make_vec", wrong_vector_env)
    with pytest.raises(AssertionError, match="differ"):
        doctor.check_vector_env(seed=0, steps=100)


def test_learning_check_fails_when_nothing_learns(monkeypatch):
    monkeypatch.setattr(doctor, "LEARNING_MAX_STEPS", 1024)  # far too short to learn
    with pytest.raises(AssertionError, match="does not learn"):
        doctor.check_learning(seed=0)
