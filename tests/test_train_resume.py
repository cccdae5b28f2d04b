"""`vecpg train --resume`: a SIGKILLed CLI run continues from its checkpoint, from the CLI.

The run is killed between checkpoints with rows already logged past the last one; the
resumed run must drop those rows, continue the step and update counters and the optimizer
state of the checkpoint, and extend metrics.csv and the TensorBoard curves with every step
exactly once. A corrupt or truncated latest checkpoint falls back to the previous one.
"""

from __future__ import annotations

import copy
import csv
import signal
import stat
import subprocess
import sys
import time

import pytest
from state_equality import assert_same

from vecpg.commands.cli import main
from vecpg.run import checkpoint
from vecpg.run.trainer import Trainer

UPDATE_STEPS = 64  # 4 envs x 16 steps per update
TINY = ["--vector", "sync", "--num-envs", "4", "--num-steps", "16", "--seed", "3"]


def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def logged_steps(run_dir) -> list[int]:
    return [int(row["global_step"]) for row in read_rows(run_dir / "metrics.csv")]


def complete_logged_steps(run_dir) -> list[int]:
    """Steps of the complete lines of a metrics.csv that is being written right now."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[1:-1]  # no header, no unfinished last line
    return [int(line.split(",")[0]) for line in lines if line]


def checkpoint_steps(run_dir) -> list[int]:
    return [step for step, _ in checkpoint.list_checkpoints(run_dir)]


def vecpg_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "vecpg", "train", *arguments]


@pytest.fixture
def trainer_at_start(monkeypatch):
    """Records what each Trainer holds when train() starts (after load_state_dict)."""
    seen: list[dict] = []
    original = Trainer.train

    def train(self):
        seen.append(
            {
                "global_step": self.global_step,
                "update": self.update,
                "learner": copy.deepcopy(self.learner.state_dict()),
                "policy": copy.deepcopy(self.policy.state_dict()),
            }
        )
        return original(self)

    monkeypatch.setattr(Trainer, "train", train)
    return seen


def tensorboard_steps(run_dir, tag="time/sps") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def kill_between_checkpoints(run_dir, interval: int) -> None:
    """Start a long CLI run, SIGKILL it once rows are logged well past a checkpoint."""
    process = subprocess.Popen(
        vecpg_command(
            *TINY,
            "--total-steps",
            "10000000",
            "--checkpoint-interval",
            str(interval),
            "--run-dir",
            str(run_dir),
            "--quiet",
        ),  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            saved, logged = checkpoint_steps(run_dir), complete_logged_steps(run_dir)
            # mid-way between two checkpoints: rows after the last one exist, and the next
            # one is several updates away, so the kill cannot race a checkpoint write
            if saved and logged and interval // 4 <= logged[-1] - saved[-1] <= interval // 2:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, stderr.decode()


def test_sigkill_between_checkpoints_then_resume_from_the_cli(tmp_path, trainer_at_start, capsys):
    run_dir = tmp_path / "run"
    kill_between_checkpoints(run_dir, interval=1024)
    latest = checkpoint.load_latest(run_dir)
    assert latest.step % 1024 == 0 and latest.step >= 1024
    assert complete_logged_steps(run_dir)[-1] > latest.step  # rows past the checkpoint
    target = latest.step + 8 * UPDATE_STEPS
    # TensorBoard reads event files in name order and names start with the creation second:
    # a resumed writer created in the killed one's second could sort first, and then the
    # purge of the killed run's later events would not apply. Real resumes are seconds apart.
    [killed_events] = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    created = int(killed_events.name.split(".")[3])
    while int(time.time()) <= created:
        time.sleep(0.05)

    assert main(["train", "--resume", str(run_dir), "--total-steps", str(target)]) == 0
    captured = capsys.readouterr()
    assert f"resuming {run_dir} from step_{latest.step:012d}.pt (step {latest.step:,}" in (
        captured.err
    )
    assert "dropped" in captured.err and "metrics rows logged after it" in captured.err
    assert f"{target:,} steps (resumed at {latest.step:,}) in" in captured.out

    # the step count, update count and optimizer state continue from the checkpoint
    [start] = trainer_at_start
    assert start["global_step"] == latest.step == latest.state["global_step"]
    assert start["update"] == latest.state["update"] == latest.step // UPDATE_STEPS
    assert_same(start["learner"], latest.state["learner"])
    assert_same(start["policy"], latest.state["policy"])
    assert latest.state["learner"]["optimizer"]["state"][0]["step"] > 0  # not a fresh optimizer

    # training went on: more optimizer steps and a final checkpoint at the new target
    final = checkpoint.load_latest(run_dir)
    assert final.step == target and final.state["update"] == target // UPDATE_STEPS
    assert (
        final.state["learner"]["optimizer"]["state"][0]["step"]
        > latest.state["learner"]["optimizer"]["state"][0]["step"]
    )
    assert final.state["config"]["total_steps"] == target

    # one metrics.csv, extended: every update exactly once, no duplicate, no gap
    rows = read_rows(run_dir / "metrics.csv")
    assert [int(row["global_step"]) for row in rows] == list(
        range(UPDATE_STEPS, target + 1, UPDATE_STEPS)
    )
    assert [int(row["update"]) for row in rows] == list(range(1, target // UPDATE_STEPS + 1))

    # TensorBoard: events the killed run wrote after the checkpoint are purged
    steps = tensorboard_steps(run_dir)
    assert steps == sorted(set(steps))
    assert steps[-8:] == list(range(latest.step + UPDATE_STEPS, target + 1, UPDATE_STEPS))


def short_run(run_dir, *extra: str) -> None:
    argv = ["train", *TINY, "--total-steps", "768", "--checkpoint-interval", "256"]
    assert main([*argv, "--run-dir", str(run_dir), "--quiet", *extra]) == 0
    assert checkpoint_steps(run_dir) == [256, 512, 768]


@pytest.mark.parametrize("damage", ["truncated", "flipped_byte", "empty"])
def test_corrupt_latest_checkpoint_warns_and_resumes_from_the_previous_one(
    tmp_path, damage, capsys
):
    run_dir = tmp_path / "run"
    short_run(run_dir)
    capsys.readouterr()
    latest = checkpoint.checkpoint_path(run_dir, 768)
    data = bytearray(latest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped_byte":
        # a byte inside the policy's tensor data: only the zip CRC check notices it
        position = data.index(b"data/0") + 200
        data[position] ^= 0xFF
    else:
        data = bytearray()
    latest.write_bytes(bytes(data))

    result = subprocess.run(
        vecpg_command("--resume", str(run_dir), "--total-steps", "1024"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "warning" in line)
    assert warning.startswith(f"vecpg: warning: checkpoint {latest} ")
    assert warning.endswith(
        "; moved it aside to corrupt_step_000000000768.pt; falling back to the previous checkpoint"
    )
    assert (run_dir / "checkpoints" / "corrupt_step_000000000768.pt").read_bytes() == data
    assert "Traceback" not in result.stderr and "warnings.warn" not in result.stderr
    assert "from step_000000000512.pt (step 512, update 8)" in result.stderr
    assert "1,024 steps (resumed at 512)" in result.stdout
    assert logged_steps(run_dir) == list(range(UPDATE_STEPS, 1024 + 1, UPDATE_STEPS))
    assert checkpoint.load_latest(run_dir).step == 1024


def test_a_corrupt_checkpoint_moved_aside_no_longer_counts_toward_keep_last(tmp_path, capsys):
    run_dir = tmp_path / "run"
    short_run(run_dir)  # keeps the last 3: 256, 512, 768
    checkpoint.checkpoint_path(run_dir, 768).write_bytes(b"garbage")
    argv = ["train", "--resume", str(run_dir), "--total-steps", "1024", "--quiet"]
    assert main([*argv, "--checkpoint-interval", "0"]) == 0
    # the good 256 stays one of the 3 kept; the corrupt file is kept aside for inspection
    assert checkpoint_steps(run_dir) == [256, 512, 1024]
    assert (run_dir / "checkpoints" / "corrupt_step_000000000768.pt").read_bytes() == b"garbage"
    assert logged_steps(run_dir) == list(range(UPDATE_STEPS, 1024 + 1, UPDATE_STEPS))


def test_resume_rewinds_metrics_and_keeps_their_permissions(tmp_path, capsys):
    run_dir = tmp_path / "run"
    short_run(run_dir, "--no-tensorboard")
    (run_dir / "checkpoints" / "step_000000000768.pt").unlink()  # killed before it
    metrics = run_dir / "metrics.csv"
    metrics.chmod(0o644)
    assert main(["train", "--resume", str(run_dir), "--total-steps", "768"]) == 0
    assert "dropped 4 metrics rows logged after it" in capsys.readouterr().err
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert logged_steps(run_dir) == list(range(UPDATE_STEPS, 768 + 1, UPDATE_STEPS))


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    short_run(run_dir)
    for _, path in checkpoint.list_checkpoints(run_dir):
        path.write_bytes(b"not a checkpoint")
    before = (run_dir / "metrics.csv").read_text()
    capsys.readouterr()
    status = main(["train", "--resume", str(run_dir), "--total-steps", "1024"])
    error = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(error) == 4 and all(line.startswith("vecpg: warning: ") for line in error[:3])
    assert error[-1].startswith("vecpg: error: none of the 3 checkpoints in ")
    assert (run_dir / "metrics.csv").read_text() == before


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--env", "Acrobot-v1"], "--env cannot change on --resume (saved 'CartPole-v1'"),
        (["--algo", "a2c"], "--algo cannot change on --resume"),
        (["--num-envs", "8"], "--num-envs cannot change on --resume (saved 4, given 8)"),
        (["--hidden-sizes", "32"], "--hidden-sizes cannot change on --resume"),
        (["--run-dir", "elsewhere"], "--run-dir 'elsewhere' differs from --resume"),
        ([], "the run already reached total_steps=768"),
        (["--total-steps", "512"], "pass a larger --total-steps"),
    ],
)
def test_resume_refuses_run_breaking_changes_and_leaves_the_run_alone(
    tmp_path, arguments, message, capsys
):
    run_dir = tmp_path / "run"
    short_run(run_dir)
    (run_dir / "metrics.csv").write_text((run_dir / "metrics.csv").read_text() + "5000,1\n")
    before = (run_dir / "metrics.csv").read_text()
    capsys.readouterr()
    status = main(["train", "--resume", str(run_dir), *arguments])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("vecpg: error: ") and error.count("\n") == 1, error
    assert message in error
    assert (run_dir / "metrics.csv").read_text() == before  # nothing rewound
    assert checkpoint_steps(run_dir) == [256, 512, 768]


def test_resume_accepts_same_values_and_safe_overrides(tmp_path, trainer_at_start, capsys):
    run_dir = tmp_path / "run"
    short_run(run_dir, "--no-tensorboard")
    capsys.readouterr()
    argv = ["train", "--resume", str(run_dir), "--total-steps", "896", "--quiet"]
    # the same env/num-envs as saved is no change; learning rate and clip may change
    argv += ["--env", "CartPole-v1", "--num-envs", "4", "--learning-rate", "1e-4"]
    assert main([*argv, "--clip-coef", "0.1", "--checkpoint-interval", "0"]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    final = checkpoint.load_latest(run_dir)
    assert final.step == 896
    assert final.state["config"]["learning_rate"] == 1e-4
    assert final.state["config"]["clip_coef"] == 0.1
    assert final.state["config"]["seed"] == 3  # the rest comes from the checkpoint
    assert "learning_rate: 0.0001" in (run_dir / "config.yaml").read_text()
    rows = read_rows(run_dir / "metrics.csv")
    assert float(rows[-1]["learning_rate"]) == pytest.approx(1e-4)
    assert [int(row["global_step"]) for row in rows] == list(range(64, 897, 64))
    assert trainer_at_start[-1]["global_step"] == 768


def test_resume_drops_health_findings_logged_after_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    short_run(run_dir, "--no-tensorboard")
    early = '{"condition": "x", "global_step": 512}\n'
    (run_dir / "health.jsonl").write_text(early + '{"condition": "y", "global_step": 900}\n{"c')
    (run_dir / "checkpoints" / "step_000000000768.pt").unlink()  # killed before it
    assert main(["train", "--resume", str(run_dir), "--total-steps", "768", "--quiet"]) == 0
    assert (run_dir / "health.jsonl").read_text() == early
    assert logged_steps(run_dir) == list(range(64, 769, 64))


@pytest.mark.parametrize("interrupted_in", ["collect", "update"])
def test_ctrl_c_then_resume_loses_and_repeats_no_update(tmp_path, monkeypatch, interrupted_in):
    """Ctrl-C mid-rollout saves a final checkpoint; mid-update it must not (no row for it)."""
    run_dir = tmp_path / "run"
    original_build = Trainer._build

    def build_with_interrupt(self):
        original_build(self)
        component = self.sampler if interrupted_in == "collect" else self.learner
        method = getattr(component, interrupted_in)
        calls = []

        def interrupted(*args):
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return method(*args)

        setattr(component, interrupted_in, interrupted)

    monkeypatch.setattr(Trainer, "_build", build_with_interrupt)
    argv = ["train", *TINY, "--total-steps", "640", "--checkpoint-interval", "128"]
    assert main([*argv, "--run-dir", str(run_dir), "--quiet", "--no-tensorboard"]) == 130
    monkeypatch.setattr(Trainer, "_build", original_build)
    # 4 updates done (rows 64..256); the 5th rollout (to step 320) was never learned from
    assert logged_steps(run_dir) == [64, 128, 192, 256]
    assert checkpoint.load_latest(run_dir).step == 256

    assert main(["train", "--resume", str(run_dir), "--quiet", "--no-tensorboard"]) == 0
    assert logged_steps(run_dir) == list(range(64, 640 + 1, 64))
