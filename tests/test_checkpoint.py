"""Checkpoints: atomic writes, keep-last-K, corruption fallback, and the trainer callback."""

from __future__ import annotations

import errno
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from full_disk import fill_the_disk
from state_equality import assert_same

from vecpg.errors import CheckpointError, RunDirError, refused_by_system
from vecpg.run import checkpoint
from vecpg.run.checkpoint import (
    CheckpointCallback,
    CheckpointWarning,
    list_checkpoints,
    load,
    load_any,
    load_latest,
    save,
)
from vecpg.run.files import rewind_log


def make_state(step: int) -> dict:
    """A state shaped like trainer.state_dict(): tensors, optimizer, numpy, RNG, config."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {
        "policy": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "normalizer": {
            "mean": np.arange(3.0),
            "var": np.ones(3, np.float32),
            "count": np.float64(7),
        },
        "global_step": step,
        "update": step // 64,
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "numpy_generator": np.random.default_rng(1).bit_generator.state,
            "torch": torch.get_rng_state(),
        },
        "config": {"env_id": "CartPole-v1", "algo": "ppo", "hidden_sizes": [64, 64]},
    }


def steps_on_disk(run_dir) -> list[int]:
    return [step for step, _ in list_checkpoints(run_dir)]


def test_round_trip_with_safe_loading(tmp_path):
    state = make_state(128)
    path = save(state, tmp_path, 128)
    assert path == tmp_path / "checkpoints" / "step_000000000128.pt"
    loaded = load(path)  # weights_only=True with the numpy allowlist
    assert loaded["global_step"] == 128 and loaded["config"] == state["config"]
    assert torch.equal(loaded["policy"]["weight"], state["policy"]["weight"])
    assert loaded["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    np.testing.assert_array_equal(loaded["normalizer"]["mean"], state["normalizer"]["mean"])
    assert loaded["rng"]["python"] == state["rng"]["python"]
    np.testing.assert_array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])


def test_keep_last_k(tmp_path):
    for step in range(100, 700, 100):
        save(make_state(step), tmp_path, step, keep_last=3)
    assert steps_on_disk(tmp_path) == [400, 500, 600]
    save(make_state(700), tmp_path, 700, keep_last=1)
    assert steps_on_disk(tmp_path) == [700]
    with pytest.raises(ValueError, match="keep_last"):
        save(make_state(1), tmp_path, 1, keep_last=0)


def test_ordering_is_by_step_not_by_name_or_mtime(tmp_path):
    save(make_state(10_000), tmp_path, 10_000)
    save(make_state(900), tmp_path, 900)  # written later, older step
    assert load_latest(tmp_path).step == 10_000


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save(make_state(100), tmp_path, 100)

    def crash_after_partial_write(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(torch, "save", crash_after_partial_write)
    with pytest.raises(KeyboardInterrupt):
        save(make_state(200), tmp_path, 200)
    monkeypatch.undo()
    assert steps_on_disk(tmp_path) == [100]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_000000000100.pt"]
    assert load_latest(tmp_path).state["global_step"] == 100


def test_crash_before_rename_leaves_temporary_that_is_ignored_then_cleaned(tmp_path, monkeypatch):
    save(make_state(100), tmp_path, 100)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(OSError):
        save(make_state(200), tmp_path, 200)
    monkeypatch.undo()
    # a process killed here (SIGKILL) would leave its temporary: simulate one
    stale = tmp_path / "checkpoints" / ".step_000000000200.pt.abc123.tmp"
    stale.write_bytes(b"partial")
    assert load_latest(tmp_path).step == 100
    save(make_state(300), tmp_path, 300)
    assert not stale.exists()
    assert steps_on_disk(tmp_path) == [100, 300]


def test_full_disk_is_one_clear_error_and_the_previous_checkpoints_stay(tmp_path, monkeypatch):
    for step in (100, 200, 300):
        save(make_state(step), tmp_path, step)
    fill_the_disk(monkeypatch)
    with pytest.raises(RunDirError) as caught:
        save(make_state(400), tmp_path, 400)
    monkeypatch.undo()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"No space left on device while writing {checkpoint.checkpoint_path(tmp_path, 400)} ("
    )
    assert " free on its file system); the previous checkpoints are intact" in message
    assert f"vecpg train --resume {tmp_path}" in message
    # torch.save hit the OSError inside its own writer: the one-line error carries it
    assert refused_by_system(caught.value).errno == errno.ENOSPC
    assert steps_on_disk(tmp_path) == [100, 200, 300]  # nothing rotated out
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        f"step_{step:012d}.pt" for step in (100, 200, 300)
    ]  # no temporary left
    assert load_latest(tmp_path).state["global_step"] == 300


def test_load_latest_moves_a_corrupt_checkpoint_aside_only_when_asked(tmp_path):
    for step in (100, 200, 300):
        save(make_state(step), tmp_path, step)
    latest = checkpoint.checkpoint_path(tmp_path, 300)
    truncate(latest)
    with pytest.warns(CheckpointWarning, match="falling back") as caught:
        assert load_latest(tmp_path).step == 200  # a reader (vecpg eval) leaves files alone
    assert "moved" not in str(caught[0].message) and latest.exists()

    with pytest.warns(CheckpointWarning) as caught:
        assert load_latest(tmp_path, move_aside=True).step == 200
    message = str(caught[0].message)
    assert message.startswith(f"checkpoint {latest} is truncated")
    assert message.endswith(
        "; moved it aside to corrupt_step_000000000300.pt; falling back to the previous checkpoint"
    )
    assert steps_on_disk(tmp_path) == [100, 200]  # no longer a candidate, nor one of the K
    assert (tmp_path / "checkpoints" / "corrupt_step_000000000300.pt").is_file()
    save(make_state(400), tmp_path, 400)
    assert steps_on_disk(tmp_path) == [100, 200, 400]


def test_an_unsafe_checkpoint_is_not_moved_aside(tmp_path):
    save(make_state(100), tmp_path, 100)
    save({"global_step": 200, "thing": Path("x")}, tmp_path, 200)
    with pytest.warns(CheckpointWarning, match="safe loading refuses"):
        assert load_latest(tmp_path, move_aside=True).step == 100
    assert steps_on_disk(tmp_path) == [100, 200]  # not corrupt: the user decides


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_latest_falls_back_with_warning(tmp_path):
    for step in (100, 200, 300):
        save(make_state(step), tmp_path, step)
    truncate(checkpoint.checkpoint_path(tmp_path, 300))
    with pytest.warns(CheckpointWarning, match=r"step_000000000300\.pt is truncated.*falling back"):
        loaded = load_latest(tmp_path)
    assert loaded.step == 200 and loaded.state["global_step"] == 200


def test_flipped_byte_in_tensor_data_is_detected(tmp_path):
    save({"weights": torch.zeros(1000)}, tmp_path, 100)
    path = save({"weights": torch.zeros(1000)}, tmp_path, 200)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the 4000-byte tensor record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load(path)
    with pytest.warns(CheckpointWarning):
        assert load_latest(tmp_path).step == 100


def test_garbage_file_gives_clear_error(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "step_000000000100.pt").write_bytes(b"this is not a checkpoint" * 10)
    (directory / "step_000000000200.pt").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="none of the 2 checkpoints .* is readable"):
            load_latest(tmp_path)


def test_no_checkpoint_gives_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in .*--checkpoint-interval"):
        load_latest(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.pt")


def test_non_dict_state_is_rejected(tmp_path):
    path = tmp_path / "checkpoints" / "step_000000000001.pt"
    path.parent.mkdir()
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load(path)


class Opaque:
    pass


def test_unsafe_object_gives_clear_error_and_trusted_load_works(tmp_path):
    path = save({"config": Opaque()}, tmp_path, 5)
    with pytest.raises(CheckpointError, match="safe loading refuses.*Opaque.*weights_only=False"):
        load(path)
    assert isinstance(load(path, weights_only=False)["config"], Opaque)


def test_load_any_accepts_file_or_run_dir(tmp_path):
    save(make_state(100), tmp_path, 100)
    path = save(make_state(200), tmp_path, 200)
    assert load_any(tmp_path).step == 200
    first = checkpoint.checkpoint_path(tmp_path, 100)
    assert load_any(first).state["global_step"] == 100
    truncate(path)
    with pytest.raises(CheckpointError):
        load_any(path)  # an explicit file is never silently swapped


class FakeTrainer:
    def __init__(self, run_dir, global_step=0):
        self.run_dir = run_dir
        self.global_step = global_step
        self.weights = torch.zeros(2)

    def state_dict(self):
        return {"global_step": self.global_step, "weights": self.weights.clone()}

    def step(self, callback, steps, **row):
        self.global_step += steps
        callback.on_update(self, {"global_step": self.global_step, "policy_loss": 0.1, **row})


def test_callback_periodic_and_final(tmp_path):
    trainer = FakeTrainer(tmp_path)
    callback = CheckpointCallback(1000, keep_last=10)
    callback.on_start(trainer)
    for _ in range(10):
        trainer.step(callback, 300)
    # due at 1000, 2000, 3000: saved at the first update crossing each
    assert steps_on_disk(tmp_path) == [1200, 2100, 3000]
    callback.on_end(trainer, {"global_step": trainer.global_step})
    assert steps_on_disk(tmp_path) == [1200, 2100, 3000]  # 3000 already saved
    trainer.step(callback, 300)
    callback.on_end(trainer, {"global_step": trainer.global_step})
    assert steps_on_disk(tmp_path)[-1] == 3300
    assert callback.last_path == checkpoint.checkpoint_path(tmp_path, 3300)


def test_callback_schedule_continues_after_resume(tmp_path):
    trainer = FakeTrainer(tmp_path, global_step=2500)
    callback = CheckpointCallback(1000)
    callback.on_start(trainer)
    trainer.step(callback, 400)  # 2900: not due
    trainer.step(callback, 400)  # 3300: due (3000 crossed)
    assert steps_on_disk(tmp_path) == [3300]


def test_callback_final_only(tmp_path):
    trainer = FakeTrainer(tmp_path)
    callback = CheckpointCallback(None)
    callback.on_start(trainer)
    for _ in range(5):
        trainer.step(callback, 1000)
    assert steps_on_disk(tmp_path) == []
    callback.on_end(trainer, {})
    assert steps_on_disk(tmp_path) == [5000]


def test_callback_nonfinite_saves_failure_outside_rotation_and_no_final(tmp_path):
    trainer = FakeTrainer(tmp_path)
    callback = CheckpointCallback(1000)
    callback.on_start(trainer)
    trainer.step(callback, 1000)
    trainer.weights = torch.full((2,), float("nan"))
    trainer.step(callback, 1000, value_loss=float("nan"))
    failure = tmp_path / "checkpoints" / "nonfinite_step_000000002000.pt"
    assert callback.failure_path == failure and failure.exists()
    assert callback.save_failure(trainer, {"global_step": 2000}) == failure  # idempotent
    callback.on_end(trainer, {"global_step": 2000})
    assert steps_on_disk(tmp_path) == [1000]
    assert load_latest(tmp_path).step == 1000  # resume never picks the NaN state
    assert torch.isnan(load(failure)["weights"]).all()


def test_health_and_checkpoint_callbacks_together_in_either_order(tmp_path):
    from vecpg.errors import NonFiniteError
    from vecpg.run.health import HealthCallback

    for order in ("checkpoint_first", "health_first"):
        run_dir = tmp_path / order
        trainer = FakeTrainer(run_dir)
        saver = CheckpointCallback(1000)
        health = HealthCallback(checkpoint=saver, emit=False)
        callbacks = [saver, health] if order == "checkpoint_first" else [health, saver]
        for callback in callbacks:
            callback.on_start(trainer)
        trainer.global_step = 1000
        for callback in callbacks:
            callback.on_update(trainer, {"global_step": 1000, "policy_loss": 0.1})
        trainer.global_step = 2000
        row = {"global_step": 2000, "policy_loss": float("nan")}
        with pytest.raises(NonFiniteError, match=r"nonfinite_step_000000002000\.pt.*last good"):
            for callback in callbacks:
                callback.on_update(trainer, row)
        assert (run_dir / "checkpoints" / "nonfinite_step_000000002000.pt").exists()
        assert steps_on_disk(run_dir) == [1000]


def test_callback_on_end_after_error_never_rotates_a_nan_state(tmp_path):
    trainer = FakeTrainer(tmp_path)
    callback = CheckpointCallback(1000)
    callback.on_start(trainer)
    trainer.step(callback, 1000)
    trainer.weights = torch.tensor([0.0, float("inf")])  # blew up inside an update that raised
    trainer.global_step = 1500
    with pytest.warns(CheckpointWarning, match=r"non-finite values \(weights\)"):
        callback.on_end(trainer, {"global_step": 1500, "stop_reason": "error: RuntimeError"})
    assert steps_on_disk(tmp_path) == [1000]
    assert (tmp_path / "checkpoints" / "nonfinite_step_000000001500.pt").exists()


# --- integration with the real trainer (short CPU runs, in-process envs) ---------------


def make_trainer(run_dir, callbacks, **options):
    from vecpg.run.config import resolve_config
    from vecpg.run.trainer import Trainer

    values = {"env": "CartPole-v1", "algo": "ppo", "vector": "sync", "seed": 3}
    values.update(num_envs=4, num_steps=64, **options)
    return Trainer(resolve_config(cli_values=values), run_dir, callbacks=callbacks)


def test_real_trainer_state_round_trips_and_training_goes_on(tmp_path):
    from vecpg.run.metrics import MetricsCSV

    run_dir = tmp_path / "run"
    saver = CheckpointCallback(1024, keep_last=2)
    first = make_trainer(run_dir, [MetricsCSV(), saver], total_steps=3072)
    first.train()
    assert steps_on_disk(run_dir) == [2048, 3072]  # periodic at 1024, 2048, final 3072; keep 2
    loaded = load_latest(run_dir)  # weights_only=True works on the real state
    assert loaded.step == 3072 and loaded.state["global_step"] == 3072
    assert loaded.state["config"]["algo"] == "ppo"
    saved_optimizer = first.learner.state_dict()["optimizer"]

    resumed = make_trainer(run_dir, [MetricsCSV(), CheckpointCallback(1024)], total_steps=4096)
    resumed.load_state_dict(loaded.state)
    assert resumed.global_step == 3072 and resumed.update == first.update
    assert_same(resumed.learner.state_dict()["optimizer"], saved_optimizer)
    assert saved_optimizer["state"][0]["step"] > 0  # the optimizer state is not a fresh one
    for name, tensor in first.policy.state_dict().items():
        assert torch.equal(resumed.policy.state_dict()[name], tensor)
    resumed.train()
    assert steps_on_disk(run_dir)[-1] == 4096
    with open(run_dir / "metrics.csv") as stream:
        steps = [int(line.split(",")[0]) for line in stream.readlines()[1:]]
    assert steps == list(range(256, 4096 + 1, 256))  # extended, no duplicated or lost rows


KILLED_RUN = """
import sys
from vecpg.run.checkpoint import CheckpointCallback
from vecpg.run.config import resolve_config
from vecpg.run.metrics import MetricsCSV
from vecpg.run.trainer import Trainer
values = dict(env="CartPole-v1", algo="ppo", vector="sync", seed=3, num_envs=4, num_steps=64,
              total_steps=10_000_000)
Trainer(resolve_config(cli_values=values), sys.argv[1],
        callbacks=[MetricsCSV(), CheckpointCallback(1024)]).train()
"""


def metrics_steps(run_dir) -> list[int]:
    with open(run_dir / "metrics.csv") as stream:
        return [int(line.split(",")[0]) for line in stream.read().splitlines()[1:]]


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from vecpg.run.metrics import MetricsCSV

    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(run_dir)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            saved = steps_on_disk(run_dir)
            # killed between checkpoints: rows were logged after the last one
            if saved and (run_dir / "metrics.csv").exists() and saved[-1] >= 2048:
                if metrics_steps(run_dir)[-1] > saved[-1]:
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    latest = load_latest(run_dir)
    assert metrics_steps(run_dir)[-1] > latest.step  # rows past the checkpoint exist

    assert rewind_log(run_dir / "metrics.csv", latest.step) >= 1
    resumed = make_trainer(run_dir, [MetricsCSV()], total_steps=latest.step + 2048)
    resumed.load_state_dict(latest.state)
    assert resumed.global_step == latest.step
    assert resumed.update == latest.state["update"] == latest.step // 256
    assert_same(resumed.learner.state_dict(), latest.state["learner"])
    summary = resumed.train()
    assert summary["global_step"] == latest.step + 2048  # training went on
    assert (
        resumed.learner.state_dict()["optimizer"]["state"][0]["step"]
        > latest.state["learner"]["optimizer"]["state"][0]["step"]
    )
    assert metrics_steps(run_dir) == list(range(256, latest.step + 2048 + 1, 256))
