"""benchmarks/quality.py: the normalized score, the table, and resuming per cell."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import time

import pytest

from tests.benchmark_scripts import load_benchmark

quality = load_benchmark("quality")


def cell(env, algo, seed, final, returncode=0, evaluated=math.nan):
    return {
        "kind": "cell", "env": env, "algo": algo, "seed": seed, "final_return": final,
        "eval_return": evaluated, "global_step": 1000, "wall_s": 1.0, "returncode": returncode,
        "run_dir": "",
    }  # fmt: skip


def test_summary_normalizes_the_published_figures_kind_of_score():
    results = [
        {"kind": "random", "env": "Acrobot-v1", "mean": -500.0},
        cell("Acrobot-v1", "ppo", 1, -100.0, evaluated=-70.0),
        cell("Acrobot-v1", "ppo", 2, -80.0, evaluated=-60.0),
        cell("Acrobot-v1", "ppo", 3, -90.0, evaluated=-80.0),
        cell("Acrobot-v1", "ppo", 4, 0.0, returncode=1),  # a failed run is not averaged
        {"kind": "random", "env": "HalfCheetah-v5", "mean": -300.0},
        cell("HalfCheetah-v5", "ppo", 1, 1700.0, evaluated=2500.0),
    ]
    acrobot, cheetah = quality.summarize(results)
    assert acrobot["mean"] == pytest.approx(-90.0)
    assert acrobot["std"] == pytest.approx(math.sqrt(200 / 3))
    assert acrobot["eval_mean"] == pytest.approx(-70.0)
    # rl-zoo's figure is a deterministic evaluation: compared with vecpg eval's score
    published = quality.PUBLISHED[("Acrobot-v1", "ppo")]
    assert published.metric == "deterministic"
    assert acrobot["normalized"] == pytest.approx((-70.0 + 500.0) / (published.mean + 500.0))
    assert acrobot["failed"] == [4]
    # CleanRL's is the return of training episodes: compared with vecpg's last 20
    published = quality.PUBLISHED[("HalfCheetah-v5", "ppo")]
    assert published.metric == "training"
    assert cheetah["normalized"] == pytest.approx(2000.0 / (published.mean + 300.0))
    table = quality.markdown([acrobot, cheetah])
    assert "| Acrobot-v1 | ppo |" in table and "-70.0 ± 8.2" in table


def test_cells_without_a_deterministic_score_get_one_as_an_updated_line(tmp_path, monkeypatch):
    run_dir = tmp_path / "CartPole-v1__ppo__1"
    run_dir.mkdir()
    older = {**cell("CartPole-v1", "ppo", 1, 480.0), "run_dir": str(run_dir)}
    del older["eval_return"]
    results = tmp_path / "quality.jsonl"
    results.write_text(
        json.dumps({"kind": "random", "env": "CartPole-v1", "mean": 20.0}) + "\n"
        + json.dumps(older) + "\n"
    )  # fmt: skip
    evaluated = []
    monkeypatch.setattr(
        quality, "deterministic_return", lambda path, timeout: evaluated.append(path) or 500.0
    )
    arguments = ["--envs", "CartPole-v1", "--algos", "ppo", "--seeds", "1"]
    assert quality.main([*arguments, "--results", str(results), "--runs-dir", str(tmp_path)]) == 0
    assert evaluated == [run_dir]
    [row] = quality.summarize(quality.read_results(results))
    assert (row["mean"], row["eval_mean"]) == (480.0, 500.0)
    quality.main([*arguments, "--results", str(results), "--runs-dir", str(tmp_path)])
    assert evaluated == [run_dir]  # evaluated once


def test_finished_cells_are_skipped_and_new_ones_appended(tmp_path, monkeypatch):
    results = tmp_path / "quality.jsonl"
    results.write_text(
        json.dumps({"kind": "random", "env": "CartPole-v1", "mean": 20.0}) + "\n"
        + json.dumps(cell("CartPole-v1", "ppo", 1, 500.0)) + "\n"
    )  # fmt: skip
    ran = []

    def fake_run_cell(env, algo, seed, runs_dir, timeout_s, fresh):
        ran.append((env, algo, seed, fresh))
        return cell(env, algo, seed, 480.0)

    monkeypatch.setattr(quality, "run_cell", fake_run_cell)
    arguments = ["--envs", "CartPole-v1", "--algos", "ppo", "--seeds", "1", "2"]
    assert quality.main([*arguments, "--results", str(results), "--runs-dir", str(tmp_path)]) == 0
    assert ran == [("CartPole-v1", "ppo", 2, False)]  # seed 1 was already in the file
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line.get("seed") for line in lines] == [None, 1, 2]
    ran.clear()
    assert quality.main([*arguments, "--rerun", "--results", str(results)]) == 0
    assert ran == [("CartPole-v1", "ppo", 1, True), ("CartPole-v1", "ppo", 2, True)]


def test_train_command_sets_no_hyperparameter():
    command = quality.train_command("Hopper-v5", "ppo", 3, pathlib.Path("/tmp/run"))
    options = [part for part in command if part.startswith("--")]
    assert options == ["--env", "--algo", "--seed", "--run-dir", "--quiet", "--no-tensorboard"]


def test_deterministic_return_reads_vecpg_eval_of_a_real_run(tmp_path):
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "vecpg", "train", "--env", "CartPole-v1", "--total-steps"]
    train += ["512", "--vector", "sync", "--run-dir", str(run_dir), "--quiet", "--no-tensorboard"]
    subprocess.run(train, check=True, capture_output=True, timeout=300)
    score = quality.deterministic_return(run_dir, timeout_s=300)
    assert 8.0 <= score <= 500.0  # CartPole's returns: at least 8 steps, at most 500
    assert math.isnan(quality.deterministic_return(tmp_path / "missing", timeout_s=300))


def test_a_cell_run_from_a_relative_runs_dir_finds_its_metrics(tmp_path, monkeypatch):
    real_command = quality.train_command

    def short_command(env, algo, seed, run_dir):
        return [*real_command(env, algo, seed, run_dir), "--total-steps", "512", "--vector", "sync"]

    monkeypatch.setattr(quality, "train_command", short_command)
    monkeypatch.chdir(tmp_path)
    pathlib.Path("runs").mkdir()
    result = quality.run_cell("CartPole-v1", "ppo", 1, pathlib.Path("runs"), timeout_s=300)
    assert result["returncode"] == 0
    assert result["run_dir"] == str(tmp_path / "runs" / "CartPole-v1__ppo__1")
    assert result["global_step"] >= 512 and math.isfinite(result["eval_return"])


def test_a_cell_cut_short_resumes_from_its_checkpoint_and_sums_its_wall_time(tmp_path, monkeypatch):
    real_command = quality.train_command

    def short_command(env, algo, seed, run_dir):
        return [
            *real_command(env, algo, seed, run_dir),
            *("--total-steps", "20000", "--checkpoint-interval", "1024", "--vector", "sync"),
        ]

    monkeypatch.setattr(quality, "train_command", short_command)
    run_dir = tmp_path / "CartPole-v1__ppo__1"
    run_dir.mkdir()
    # The harness's first process, killed with it (SIGKILL: no final checkpoint) once the
    # run has saved a periodic one.
    segments = [{"started": time.time(), "wall_s": None}]
    (run_dir / quality.SEGMENTS_FILE).write_text(json.dumps(segments))
    log = tmp_path / "first.log"
    with log.open("wb") as output:
        command = short_command("CartPole-v1", "ppo", 1, run_dir)
        first = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=output)
        try:
            while first.poll() is None and not quality.list_checkpoints(run_dir):
                time.sleep(0.05)  # polling for the file; no timing is assumed
        finally:
            first.kill()
            first.wait()
    checkpoints = quality.list_checkpoints(run_dir)
    assert checkpoints and checkpoints[-1] < 20000, log.read_text()

    result = quality.run_cell("CartPole-v1", "ppo", 1, tmp_path, timeout_s=300)
    assert result["returncode"] == 0 and result["global_step"] >= 20000, result["error"]
    assert result["resumed_from_step"] == checkpoints[-1]
    segments = json.loads((run_dir / quality.SEGMENTS_FILE).read_text())
    assert result["segments"] == len(segments) == 2
    assert all(segment["wall_s"] > 0 for segment in segments)
    assert result["wall_s"] == pytest.approx(
        sum(segment["wall_s"] for segment in segments), abs=0.11
    )
    assert result["command"] == " ".join(short_command("CartPole-v1", "ppo", 1, run_dir))
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one continuous log


@pytest.mark.parametrize(
    "left_behind, fresh",
    [
        ("metrics.csv", False),  # a cell cut short before its first checkpoint
        ("checkpoints/step_000000100096.pt", True),  # --rerun of a finished cell
    ],
)
def test_a_cell_starts_over_without_a_checkpoint_or_when_rerun(
    tmp_path, monkeypatch, left_behind, fresh
):
    calls = []

    def fake_segment(command, run_dir, cwd, timeout_s):
        calls.append(command)
        run_dir.mkdir(parents=True, exist_ok=True)
        return 0, ""

    monkeypatch.setattr(quality, "_run_segment", fake_segment)
    monkeypatch.setattr(quality, "deterministic_return", lambda path, timeout: math.nan)
    run_dir = tmp_path / "CartPole-v1__ppo__1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / left_behind).write_text("global_step\n")
    result = quality.run_cell("CartPole-v1", "ppo", 1, tmp_path, timeout_s=300, fresh=fresh)
    assert [command[4] for command in calls] == ["--env"]  # a fresh train, not --resume
    assert result["resumed_from_step"] is None
    assert not (run_dir / left_behind).exists()  # the old run's files were removed first


def test_a_failed_resume_is_reported_and_its_run_dir_kept(tmp_path, monkeypatch):
    calls = []

    def failing_segment(command, run_dir, cwd, timeout_s):
        calls.append(command)
        return 1, "vecpg: error: run directory is in use by another vecpg process\n"

    monkeypatch.setattr(quality, "_run_segment", failing_segment)
    run_dir = tmp_path / "CartPole-v1__ppo__1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_000000004096.pt").write_bytes(b"")
    result = quality.run_cell("CartPole-v1", "ppo", 1, tmp_path, timeout_s=300)
    assert [command[4] for command in calls] == ["--resume"]  # no fresh start over it
    assert result["returncode"] == 1 and "in use" in result["error"][0]
    assert (run_dir / "checkpoints" / "step_000000004096.pt").exists()


def _run_dir_with_curve(path):
    path.mkdir(parents=True)
    rows = ["global_step,time_s,episode_return_mean", "100,1.0,-400.0", "200,2.0,-120.5"]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    return str(path)


def test_plots_overlay_each_rows_finished_seeds_from_their_latest_lines(tmp_path):
    first = _run_dir_with_curve(tmp_path / "first")
    rerun = _run_dir_with_curve(tmp_path / "rerun")
    seed_2 = _run_dir_with_curve(tmp_path / "seed_2")
    failed = _run_dir_with_curve(tmp_path / "failed")
    results = [
        {**cell("Acrobot-v1", "ppo", 1, -90.0), "run_dir": first},
        {**cell("Acrobot-v1", "ppo", 2, -80.0), "run_dir": seed_2},
        {**cell("Acrobot-v1", "ppo", 1, -85.0), "run_dir": rerun},  # replaces seed 1's line
        {**cell("Acrobot-v1", "ppo", 3, -85.0), "run_dir": str(tmp_path / "deleted")},
        {**cell("Acrobot-v1", "a2c", 1, -85.0, returncode=1), "run_dir": failed},
        {**cell("CartPole-v1", "ppo", 1, 500.0), "run_dir": _run_dir_with_curve(tmp_path / "cp")},
    ]
    commands = quality.plot_commands(results, tmp_path / "png", ["Acrobot-v1"], ["ppo", "a2c"])
    assert len(commands) == 1  # a2c's only cell failed; CartPole was not selected
    command = commands[0]
    assert command[1:4] == ["-m", "vecpg", "plot"]
    assert command[4:6] == [rerun, seed_2]  # by seed, the rerun in place of the first run
    assert command[command.index("--out") + 1] == str(tmp_path / "png" / "Acrobot-v1__ppo.png")


def test_report_with_plots_writes_a_png_per_row(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results = tmp_path / "quality.jsonl"
    for seed in (1, 2):
        run_dir = _run_dir_with_curve(tmp_path / f"seed_{seed}")
        quality.append_result(
            results, {**cell("Acrobot-v1", "ppo", seed, -90.0), "run_dir": run_dir}
        )
    argv = ["--report", "--results", str(results), "--plots", str(tmp_path / "png")]
    assert quality.main([*argv, "--envs", "Acrobot-v1", "--algos", "ppo"]) == 0
    assert (tmp_path / "png" / "Acrobot-v1__ppo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Acrobot-v1 | ppo |" in capsys.readouterr().out
