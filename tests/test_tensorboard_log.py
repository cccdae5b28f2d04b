"""TensorBoard callback: event files appear and hold every numeric row value."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vecpg.errors import ConfigError
from vecpg.run import tensorboard_log
from vecpg.run.tensorboard_log import TensorBoardCallback, available, scalar_tag

pytestmark = pytest.mark.skipif(not available(), reason="needs the tb extra (tensorboard)")


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def row(step: int, update: int) -> dict:
    return {
        "global_step": step,
        "update": update,
        "time_s": 0.5 * update,
        "sps": 1000.0,
        "episode_return_mean": float("nan") if update == 0 else 10.0 * update,
        "policy_loss": -0.1 * update,
        "value_loss": np.float32(0.25),
        "std_min": 0.5,
        "explained_variance": 0.1,
        "env": "CartPole-v1",  # not numeric: skipped
        "stopped": False,  # bool: skipped
    }


def test_event_files_hold_every_numeric_key(tmp_path):
    trainer = SimpleNamespace(run_dir=tmp_path, global_step=0)
    callback = TensorBoardCallback()
    callback.on_start(trainer)
    for update in range(3):
        callback.on_update(trainer, row(512 * (update + 1), update))
    callback.on_end(trainer, {})
    log_dir = tmp_path / "tensorboard"
    assert any(path.name.startswith("events.out.tfevents") for path in log_dir.iterdir())
    scalars = read_scalars(log_dir)
    expected = {
        scalar_tag(key)
        for key in ("update", "time_s", "sps", "episode_return_mean", "policy_loss")
        + ("value_loss", "std_min", "explained_variance")
    }
    assert set(scalars) == expected
    assert scalars["losses/policy_loss"] == [
        (512, 0.0),
        (1024, pytest.approx(-0.1)),
        (1536, pytest.approx(-0.2)),
    ]
    # the NaN return of the first update (no finished episode yet) is left out, not drawn as 0
    assert scalars["rollout/episode_return_mean"] == [(1024, 10.0), (1536, 20.0)]
    assert scalars["losses/value_loss"][0] == (512, 0.25)


def test_resume_purges_events_after_the_checkpoint(tmp_path):
    first = TensorBoardCallback(tmp_path / "tb")
    first.on_start(SimpleNamespace(global_step=0))
    for update in range(4):
        first.on_update(None, row(100 * (update + 1), update))
    first.on_end(None, {})  # a run that got to step 400, last checkpoint at step 200
    resumed = TensorBoardCallback(tmp_path / "tb")
    resumed.on_start(SimpleNamespace(global_step=200))
    for update in range(2, 4):
        resumed.on_update(None, {**row(100 * (update + 1), update), "policy_loss": 7.0})
    resumed.on_end(None, {})
    steps = read_scalars(tmp_path / "tb")["losses/policy_loss"]
    assert [step for step, _ in steps] == [100, 200, 300, 400]
    assert [value for _, value in steps[2:]] == [7.0, 7.0]


def test_missing_extra_gives_clear_error(monkeypatch):
    monkeypatch.setattr(tensorboard_log, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"vecpg\[tb\]"):
        TensorBoardCallback()
