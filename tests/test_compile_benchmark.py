"""benchmarks/compile.py: per-run times from metrics rows, medians, ratio, break-even point,
and one tiny eager-against-compiled run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark

compile_benchmark = load_benchmark("compile")


def _rows(updates, sampling=0.25):
    return [{"update_time_s": str(u), "sampling_time_s": str(sampling)} for u in updates]


def test_run_times_split_the_first_update_from_the_later_ones():
    times = compile_benchmark.run_times(_rows([12.0, 0.5, 0.3, 0.4]))
    assert times == {"first_update_s": 12.0, "update_s": 0.4, "sampling_s": 0.25}
    with pytest.raises(ValueError, match="at least 2 updates"):
        compile_benchmark.run_times(_rows([12.0]))


def _run(mode, first, update, error=None):
    run = {"mode": mode, "first_update_s": first, "update_s": update, "sampling_s": 0.2}
    return {**run, "error": error} if error else run


def test_summary_medians_ratio_and_break_even():
    runs = [
        _run("eager", 0.06, 0.50), _run("compiled", 10.06, 0.40),
        _run("eager", 0.04, 0.60), _run("compiled", 12.04, 0.38),
        _run("eager", 0.05, 0.55), _run("compiled", 11.05, 0.45),
        _run("compiled", 0.0, 0.0, error="exit code 1: boom"),  # left out of the medians
    ]  # fmt: skip
    summary = compile_benchmark.summarize(runs, steps_per_update=2048)
    assert summary["eager"]["runs"] == 3 and summary["compiled"]["runs"] == 3
    assert summary["eager"]["update_s"] == 0.55 and summary["compiled"]["update_s"] == 0.40
    assert summary["update_ratio"] == pytest.approx(0.40 / 0.55)
    assert summary["compile_s"] == pytest.approx(11.05 - 0.05)
    assert summary["break_even_updates"] == pytest.approx(11.0 / 0.15)
    assert summary["break_even_steps"] == pytest.approx(11.0 / 0.15 * 2048)


def test_no_break_even_when_compiling_does_not_speed_the_update_up():
    runs = [_run("eager", 0.05, 0.012), _run("compiled", 20.0, 0.018)]
    summary = compile_benchmark.summarize(runs, steps_per_update=256)
    assert summary["update_ratio"] == pytest.approx(1.5)
    assert summary["break_even_updates"] is None and summary["break_even_steps"] is None


def test_only_the_compiled_command_has_the_flag(tmp_path: Path):
    eager, compiled = (
        compile_benchmark.train_command("Pendulum-v1", "ppo", 3, 512, tmp_path, "cpu", flag)
        for flag in (False, True)
    )
    assert compiled == eager + ["--compile"]
    assert eager[eager.index("--total-steps") + 1] == "512"
    assert eager[eager.index("--seed") + 1] == "3"


def test_tiny_run_end_to_end(tmp_path: Path, capsys):
    out = tmp_path / "compile.json"
    argv = ["--env", "CartPole-v1", "--updates", "2", "--repeats", "1", "--out", str(out)]
    assert compile_benchmark.main(argv) == 0
    report = json.loads(out.read_text())
    assert [(run["mode"], run.get("error")) for run in report["runs"]] == [
        ("eager", None),
        ("compiled", None),
    ]
    assert report["total_steps"] == 2 * report["steps_per_update"]
    # the compiled run's first update holds the compile: far longer than the eager one's
    summary = report["summary"]
    assert summary["compiled"]["first_update_s"] > 10 * summary["eager"]["first_update_s"]
    assert summary["compile_s"] > 0
    assert "compiled / eager update time" in capsys.readouterr().out
