"""Tests of the sampling benchmark harness (vecpg.bench.sampling), `vecpg bench` and the
target checks of benchmarks/sampling.py. Tiny runs only; no wall-clock assertions."""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import statistics

import gymnasium
import pytest

from tests.benchmark_scripts import load_benchmark
from tests.fresh_python import run_python
from vecpg.bench import sampling as sampling_benchmark
from vecpg.commands.cli import main as cli_main
from vecpg.vector.worker_defaults import usable_cores

HAS_VECPG_VECTOR = importlib.util.find_spec("vecpg.vector.env") is not None
TINY = {"repeats": 1, "seconds": 0.0, "warmup_seconds": 0.0, "min_steps": 3, "log": None}
POINT_FIELDS = {
    "workload", "num_envs", "vectorizer", "kind", "num_workers", "wait",
    "is_vecpg_default", "status", "reason", "runs",
}  # fmt: skip


def test_tiny_grid_is_well_formed_json_with_positive_rates():
    report = sampling_benchmark.run_grid(
        workloads=["cartpole", "busy", "image"],
        num_envs=[2],
        num_workers=[None],
        peers=["sync", "async", "envpool", "pufferlib"],
        step_cost_us=5.0,
        checks=False,
        **TINY,
    )
    report = json.loads(json.dumps(report))  # JSON-able, and what the file will hold
    assert {"settings", "machine", "workloads", "points", "memory", "cold_start"} <= set(report)
    assert report["machine"]["usable_cores"] >= 1
    assert report["machine"]["versions"]["gymnasium"]
    for name in ["cartpole", "busy", "image"]:
        workload = report["workloads"][name]
        assert workload["single_env_steps_per_second"] > 0
        assert workload["ideal_steps_per_second"] == pytest.approx(
            workload["single_env_steps_per_second"] * report["machine"]["usable_cores"]
        )
    by_key = {(point["workload"], point["vectorizer"]): point for point in report["points"]}
    assert len(by_key) == len(report["points"]) == 3 * 5
    for point in report["points"]:
        assert POINT_FIELDS <= set(point)
        if point["status"] == "ok":
            assert point["steps_per_second"] > 0 and point["construction_s"] > 0
            assert len(point["runs"]) == 1 and point["runs"][0]["vector_steps"] >= 3
            assert point["fraction_of_ideal"] > 0
        else:
            assert point["status"] == "skipped" and point["reason"], point
    for name in ["cartpole", "busy", "image"]:
        for peer in ["sync", "async"]:
            assert by_key[(name, peer)]["status"] == "ok"
        assert by_key[(name, "sync")]["ratio_vs_sync"] == pytest.approx(1.0)
        assert by_key[(name, "async")]["ratio_vs_async"] == pytest.approx(1.0)
        assert by_key[(name, "pufferlib")]["status"] == "skipped"
    # EnvPool runs only its own C++ envs: skipped for Python workloads, whether or not it is installed.
    assert by_key[("image", "envpool")]["status"] == "skipped"
    reason = by_key[("image", "envpool")]["reason"]
    assert "Python-env" in reason or "not installed" in reason
    vecpg_point = by_key[("cartpole", "vecpg(w=default,wait=default)")]
    assert vecpg_point["is_vecpg_default"]
    assert vecpg_point["status"] == ("ok" if HAS_VECPG_VECTOR else "skipped")
    if HAS_VECPG_VECTOR:  # what vecpg made of the defaults: workers, share and both spin bounds
        from vecpg.vector.env import spin_seconds_for

        workers, share, *spins = vecpg_point["resolved_layout"]
        assert workers == vecpg_point["resolved_num_workers"] >= 1 and isinstance(share, bool)
        assert spins == list(spin_seconds_for("auto", workers, usable_cores()))


def test_missing_peer_is_skipped_with_a_reason(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "stable_baselines3" else real_find_spec(name, *args),
    )
    report = sampling_benchmark.run_grid(
        workloads=["cartpole"], num_envs=[2], num_workers=[], peers=["sync", "sb3"], checks=False, **TINY
    )  # fmt: skip
    sb3 = next(point for point in report["points"] if point["kind"] == "sb3")
    assert sb3["status"] == "skipped"
    assert "stable_baselines3 is not installed" in sb3["reason"]
    assert "runs" in sb3 and "steps_per_second" not in sb3
    assert "skipped: stable_baselines3 is not installed" in sampling_benchmark.format_table(report)


def test_per_workload_num_envs_and_too_many_workers_are_skipped():
    report = sampling_benchmark.run_grid(
        workloads=["cartpole", "image"],
        num_envs={"cartpole": [2], "image": [1]},
        num_workers=[2],
        peers=["sync"],
        checks=False,
        **TINY,
    )
    sizes = {(point["workload"], point["num_envs"]) for point in report["points"]}
    assert sizes == {("cartpole", 2), ("image", 1)}
    image_vecpg = next(
        p for p in report["points"] if p["workload"] == "image" and p["kind"] == "vecpg"
    )
    assert image_vecpg["status"] == "skipped"
    expected = "num_workers=2 > num_envs=1" if HAS_VECPG_VECTOR else "not installed"
    assert expected in image_vecpg["reason"]


@pytest.mark.skipif(not HAS_VECPG_VECTOR, reason="vecpg.vector.env has not landed")
def test_worker_memory_and_cold_start_checks():
    workload = sampling_benchmark.make_workload("cartpole")
    memory = sampling_benchmark.measure_worker_memory(workload, num_envs=2)
    assert memory["status"] == "ok"
    assert len(memory["worker_uss_mb"]) == memory["num_workers"] >= 1
    assert all(uss > 0 for uss in memory["worker_uss_mb"]) and memory["baseline_uss_mb"] > 0
    assert memory["torch_in_workers"] is False
    cold = sampling_benchmark.measure_cold_start("cartpole", num_envs=2)
    assert cold["status"] == "ok" and cold["seconds"] > 0


def _bare_processes_left():
    return [child for child in multiprocessing.active_children() if "bench-bare" in child.name]


def test_parallel_capacity_reports_a_speedup_and_reaps_its_processes():
    workload = sampling_benchmark.make_workload("cartpole")
    capacity = sampling_benchmark.parallel_capacity(
        workload, processes=2, seconds=0.0, min_steps=50, repeats=3, seed=0
    )
    one, together = capacity["one_process_runs"], capacity["all_processes_runs"]
    assert capacity["processes"] == 2 and len(one) == len(together) == 3
    assert all(rate > 0 for rate in one + together)
    assert capacity["speedup"] == pytest.approx(
        statistics.median(together) / statistics.median(one)
    )
    assert not _bare_processes_left()


def test_parallel_capacity_leaves_the_fork_server_to_vecpg():
    # vecpg's workers share the imports of a fork server that vecpg starts with preloads;
    # a fork server started first by the benchmark would double their private memory.
    code = (
        "import multiprocessing.forkserver as fs\n"
        "from vecpg.bench import sampling as sb\n"
        "sb.parallel_capacity(sb.make_workload('cartpole'), processes=2, seconds=0.0,\n"
        "                     min_steps=5, repeats=1, seed=0)\n"
        "assert fs._forkserver._forkserver_pid is None, 'the fork server was started'\n"
    )
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr


def test_parallel_capacity_reports_a_failing_env_and_reaps_its_processes():
    broken = sampling_benchmark.Workload(
        "broken", "an env id that does not exist", functools.partial(gymnasium.make, "NoSuchEnv-v0")
    )
    with pytest.raises(RuntimeError, match="bench-bare-0 failed.*NoSuchEnv"):
        sampling_benchmark.parallel_capacity(
            broken, processes=2, seconds=0.0, min_steps=1, repeats=1, seed=0
        )
    assert not _bare_processes_left()
    with pytest.raises(ValueError, match="processes"):
        sampling_benchmark.parallel_capacity(
            broken, processes=0, seconds=0.0, min_steps=1, repeats=1, seed=0
        )


def test_grid_checks_measure_parallel_capacity_on_several_cores():
    report = sampling_benchmark.run_grid(
        workloads=["image"], num_envs=[2], num_workers=[1], peers=["sync"], checks=True, **TINY
    )
    capacity = report["workloads"]["image"]["parallel_capacity"]
    if usable_cores() == 1:
        assert capacity is None
        return
    assert capacity["processes"] == usable_cores()
    assert capacity["speedup"] > 0
    assert "parallel capacity (image): " in sampling_benchmark.format_table(report)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="workload"):
        sampling_benchmark.make_workload("pong")
    with pytest.raises(ValueError, match="peer"):
        sampling_benchmark.run_grid(peers=["ray"], **TINY)
    with pytest.raises(ValueError, match="wait"):
        sampling_benchmark.run_grid(waits=["sleep"], **TINY)
    with pytest.raises(ValueError, match="repeats"):
        sampling_benchmark.run_grid(**{**TINY, "repeats": 0})


def test_busy_workload_runs_identical_work_everywhere():
    workload = sampling_benchmark.make_workload("busy", step_cost_us=50.0)
    first, second = workload.make_env(), workload.make_env()
    assert first.iterations == second.iterations > 0
    assert str(first.iterations) in workload.description


def test_vecpg_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "nested" / "bench.json"
    argv = ["bench", "--num-envs", "2", "--num-workers", "1", "--peers", "sync", "--repeats", "1"]
    argv += ["--seconds", "0", "--warmup-seconds", "0", "--min-steps", "2", "--no-checks"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {point["vectorizer"] for point in report["points"]} == {
        "vecpg(w=1,wait=default)",
        "sync",
    }
    printed = capsys.readouterr().out
    assert "steps/s" in printed and "sync" in printed


def test_vecpg_bench_rejects_bad_values(capsys):
    assert cli_main(["bench", "--seconds", "-1", "--no-checks"]) == 2
    assert "--seconds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["bench", "--num-workers", "0"])


def test_harness_does_not_import_torch():
    code = (
        "import sys, vecpg.bench.sampling, vecpg.commands.bench; assert 'torch' not in sys.modules"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def _point(
    workload,
    num_envs,
    vectorizer,
    rate,
    *,
    sync=None,
    asyn=None,
    workers=None,
    default=False,
    spin=1e-3,
):
    resolved_workers = 2 if default else workers
    return {
        "workload": workload, "num_envs": num_envs, "vectorizer": vectorizer,
        "kind": "vecpg" if vectorizer.startswith("vecpg") else vectorizer,
        "num_workers": workers, "wait": None, "is_vecpg_default": default, "status": "ok",
        "steps_per_second": rate, "ratio_vs_sync": sync, "ratio_vs_async": asyn,
        "resolved_num_workers": resolved_workers,
        "resolved_layout": [resolved_workers, False, spin],
    }  # fmt: skip


def test_targets_pass_fail_and_skip():
    script = load_benchmark("sampling")
    report = {
        "settings": {"step_cost_us": 100.0},
        "points": [
            _point("cartpole", 32, "vecpg(w=default,wait=default)", 100.0, sync=1.3, asyn=7.0, default=True),
            _point("cartpole", 32, "vecpg(w=1,wait=default)", 120.0, sync=0.95, asyn=9.0, workers=1),
            _point("image", 16, "vecpg(w=default,wait=default)", 50.0, sync=1.1, asyn=20.0, default=True),
        ],
        "memory": {"status": "ok", "overhead_mb": 3.0, "worker_uss_mb": [9.0], "baseline_uss_mb": 6.0,
                   "torch_in_workers": True},
        "cold_start": {"status": "ok", "num_envs": 32, "seconds": 2.5, "num_workers": 2},
    }  # fmt: skip
    statuses = {target["name"]: target["status"] for target in script.evaluate_targets(report)}
    report["points"].append(
        _point("busy", 32, "vecpg(w=default,wait=default)", 9.0, sync=1.6, default=True)
    )
    report["workloads"] = {"busy": {"parallel_capacity": {"processes": 2, "speedup": 1.75}}}
    (busy,) = [t for t in script.evaluate_targets(report) if t["name"].startswith("BusyEnv")]
    assert busy["status"] == "FAIL"
    assert busy["detail"].endswith("bare envs in 2 processes reach 1.75x one")
    assert statuses["CartPole-v1 x32, defaults vs Sync"] == "PASS"
    assert statuses["CartPole-v1 x32, defaults vs Async"] == "FAIL"
    assert statuses["BusyEnv 100us x32, defaults vs Sync"] == "SKIP"
    assert statuses["84x84x4 uint8 x16, defaults vs Sync"] == "PASS"
    assert statuses["84x84x4 uint8 x16, defaults vs Async"] == "PASS"
    assert statuses["CartPole-v1 x32, 1 worker vs Sync"] == "PASS"
    assert statuses["worker private memory beyond its envs < 20 MB"] == "PASS"
    assert statuses["no torch in the workers"] == "FAIL"
    assert statuses["32 envs up and stepping < 2 s (fresh interpreter)"] == "FAIL"
    # defaults (100) vs best (120): 83% -> FAIL; image has a single configuration -> no line
    assert statuses["cartpole x32, defaults within 10% of best vecpg configuration"] == "FAIL"
    assert not any(name.startswith("image x16, defaults within") for name in statuses)


def test_defaults_are_compared_with_other_layouts_only():
    """A point that resolves to the defaults' layout measures the defaults again: pooled."""
    script = load_benchmark("sampling")
    points = [
        _point("image", 16, "vecpg(w=default,wait=default)", 100.0, default=True),
        _point("image", 16, "vecpg(w=default,wait=spin)", 130.0, workers=2),  # same layout
        _point("image", 16, "vecpg(w=2,wait=block)", 118.0, workers=2, spin=0.0),
    ]
    (result,) = script._default_vs_best({"points": points})
    assert result["status"] == "PASS"  # median(100, 130) = 115 vs 118
    assert result["value"] == pytest.approx(115.0 / 118.0)
    points[2]["steps_per_second"] = 140.0
    (result,) = script._default_vs_best({"points": points})
    assert result["status"] == "FAIL" and result["value"] == pytest.approx(115.0 / 140.0)
    assert script._default_vs_best({"points": points[:2]}) == []  # nothing else to compare


def test_script_quick_defaults_keep_explicit_options():
    script = load_benchmark("sampling")
    argv = ["--quick", "--peers", "sync", "sb3"]
    args = script.build_parser().parse_args(argv)
    script.apply_quick(args, argv)
    assert args.peers == ["sync", "sb3"]
    assert args.num_workers == [None, 1, 2] and args.wait == ["default"] and args.seconds == 0.5


def test_sb3_points_run_and_get_ratios_against_sb3():
    pytest.importorskip("stable_baselines3")
    report = sampling_benchmark.run_grid(
        workloads=["cartpole"], num_envs=[2], num_workers=[], peers=["sb3-dummy", "vecpg-sb3"],
        checks=False, **TINY,
    )  # fmt: skip
    points = {point["kind"]: point for point in report["points"]}
    assert points["sb3-dummy"]["ratio_vs_sb3_dummy"] == pytest.approx(1.0)
    assert points["vecpg-sb3"]["status"] == "ok" and points["vecpg-sb3"]["ratio_vs_sb3_dummy"] > 0
    assert points["vecpg-sb3"]["ratio_vs_sb3"] is None  # SB3's SubprocVecEnv was not measured

    script = load_benchmark("sampling")
    report = {
        "settings": {"step_cost_us": 100.0},
        "points": [
            {**_point("cartpole", 32, "vecpg-sb3", 90.0), "kind": "vecpg-sb3", "ratio_vs_sb3": 9.0,
             "ratio_vs_sb3_dummy": 1.1},
        ],
    }  # fmt: skip
    statuses = {target["name"]: target["status"] for target in script.evaluate_targets(report)}
    assert statuses["CartPole-v1 x32, vecpg.sb3 vs SB3 SubprocVecEnv"] == "PASS"
    assert statuses["CartPole-v1 x32, vecpg.sb3 vs SB3 DummyVecEnv"] == "FAIL"
