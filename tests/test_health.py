"""Health warnings: each condition provoked by synthetic metrics rows, once per run."""

from __future__ import annotations

import importlib
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import pytest

from vecpg.errors import NonFiniteError
from vecpg.run.health import (
    HealthCallback,
    HealthMonitor,
    HealthThresholds,
    TrainingHealthWarning,
    max_entropy,
    nonfinite_values,
)

DISCRETE = gym.spaces.Discrete(4)
BOX = gym.spaces.Box(-2.0, 2.0, (3,))
TOTAL = 1_000_000


def healthy_row(step: int, update: int, *, entropy: float = 1.0, **overrides) -> dict:
    row = {
        "global_step": step,
        "update": update,
        "time_s": step / 5000,
        "sps": 5000.0,
        "episode_return_mean": float("nan") if update == 0 else 10.0 + update,
        "episode_length_mean": 20.0,
        "episodes_finished": 3,
        "policy_loss": -0.01,
        "value_loss": 0.5,
        "entropy": entropy,
        "approx_kl": 0.01,
        "clip_fraction": 0.1,
        "explained_variance": -0.2 if update < 5 else 0.6,
        "grad_norm": 0.4,
        "learning_rate": 3e-4,
        "nonfinite_log_probs": 0,
        "log_prob_mismatch": 2e-7,
        "return_mean": 15.0,
        "return_std": 8.0,
        "advantage_mean": 0.0,
        "advantage_std": 2.0,
    }
    row.update(overrides)
    return row


def conditions(findings) -> list[str]:
    return [finding.condition for finding in findings]


def test_thresholds_are_one_documented_frozen_table():
    thresholds = HealthThresholds()
    with pytest.raises(AttributeError):
        thresholds.std_tiny = 1.0  # type: ignore[misc]
    source = Path(importlib.import_module("vecpg.run.health").__file__).read_text()
    for name in thresholds.__dataclass_fields__:
        # every field is followed by its docstring in the class body
        assert f"{name}:" in source and '"""' in source.split(f"    {name}:")[1].splitlines()[1]


def test_healthy_sequence_raises_nothing():
    monitor = HealthMonitor(DISCRETE, total_steps=TOTAL)
    maximum = math.log(4)
    found = []
    for update in range(200):
        # entropy falls gradually from the maximum to 40% of it, as in a learning run
        entropy = maximum * max(0.4, 0.97 - update * 0.01)
        found += monitor.check(healthy_row(4096 * (update + 1), update, entropy=entropy))
    assert found == []


def test_healthy_continuous_sequence_raises_nothing():
    monitor = HealthMonitor(BOX, total_steps=TOTAL)
    found = []
    for update in range(100):
        found += monitor.check(
            healthy_row(2048 * (update + 1), update, entropy=3.0, std_min=0.3, std_max=1.2)
        )
    assert found == []


@pytest.mark.parametrize(
    "overrides, condition",
    [
        ({"nonfinite_log_probs": 3}, "nonfinite"),
        ({"policy_loss": float("nan")}, "nonfinite"),
        ({"value_loss": float("inf")}, "nonfinite"),
        ({"grad_norm": float("nan")}, "nonfinite"),
        ({"std_min": 1e-5, "std_max": 0.5}, "std_tiny"),
        ({"std_min": 0.5, "std_max": 50.0}, "std_huge"),
        ({"return_std": 5e4}, "return_std_extreme"),
        ({"advantage_std": 5e4}, "advantage_std_extreme"),
        ({"log_prob_mismatch": 0.3}, "log_prob_mismatch"),
    ],
)
def test_each_condition_is_provoked_once(overrides, condition):
    monitor = HealthMonitor(BOX, total_steps=TOTAL)
    first = monitor.check(healthy_row(4096, 1, **overrides))
    assert conditions(first) == [condition]
    assert isinstance(first[0].value, float) and first[0].threshold is not None
    assert f"{4096:,}" in first[0].message
    second = monitor.check(healthy_row(8192, 2, **overrides))
    assert second == []  # once per condition


def test_nonfinite_is_fatal_and_names_the_values():
    finding = HealthMonitor().check(
        healthy_row(64, 1, policy_loss=float("nan"), nonfinite_log_probs=2)
    )
    assert conditions(finding) == ["nonfinite"] and finding[0].severity == "fatal"
    assert "policy_loss=nan" in finding[0].message and "nonfinite_log_probs=2" in finding[0].message


def test_nan_episode_return_and_explained_variance_are_not_fatal():
    assert (
        nonfinite_values({"episode_return_mean": float("nan"), "explained_variance": float("nan")})
        == {}
    )


def test_std_thresholds_scale_with_the_action_range():
    wide = gym.spaces.Box(-100.0, 100.0, (1,))
    assert HealthMonitor(wide).check(healthy_row(64, 1, std_min=20.0, std_max=50.0)) == []
    assert conditions(HealthMonitor(BOX).check(healthy_row(64, 1, std_min=0.5, std_max=50.0))) == [
        "std_huge"
    ]


def test_entropy_collapse_early_but_not_late():
    early = HealthMonitor(DISCRETE, total_steps=TOTAL)
    found = early.check(healthy_row(50_000, 10, entropy=0.01))
    assert conditions(found) == ["entropy_collapse"]
    assert "5% into training" in found[0].message
    late = HealthMonitor(DISCRETE, total_steps=TOTAL)
    assert late.check(healthy_row(900_000, 200, entropy=0.01)) == []


def test_entropy_stuck_at_maximum():
    thresholds = HealthThresholds()
    monitor = HealthMonitor(DISCRETE, total_steps=100 * 4096)
    found = []
    for update in range(100):
        found += monitor.check(
            healthy_row(4096 * (update + 1), update, entropy=max_entropy(DISCRETE))
        )
    assert conditions(found) == ["entropy_stuck"]
    # warned only once past the "after" fraction of training and after the streak
    assert found[0].global_step >= thresholds.entropy_stuck_after_fraction * 100 * 4096
    assert found[0].update >= thresholds.entropy_stuck_updates - 1


def test_entropy_stuck_streak_resets():
    monitor = HealthMonitor(DISCRETE, thresholds=HealthThresholds(entropy_stuck_updates=5))
    maximum = max_entropy(DISCRETE)
    entropies = [maximum] * 4 + [0.5 * maximum] + [maximum] * 4
    found = [
        f for u, e in enumerate(entropies) for f in monitor.check(healthy_row(u, u, entropy=e))
    ]
    assert found == []


def test_entropy_checks_skipped_for_continuous_actions():
    monitor = HealthMonitor(BOX, total_steps=TOTAL)
    assert monitor.check(healthy_row(64, 1, entropy=-5.0)) == []


def test_explained_variance_negative_streak():
    limit = HealthThresholds().explained_variance_negative_updates
    monitor = HealthMonitor(DISCRETE)
    found = []
    for update in range(limit + 10):
        found += monitor.check(healthy_row(update * 64, update, explained_variance=-0.3))
    assert conditions(found) == ["explained_variance_negative"]
    assert found[0].update == limit - 1
    # a single positive value resets the streak
    monitor = HealthMonitor(DISCRETE)
    for update in range(2 * limit):
        value = 0.1 if update % (limit - 1) == 0 else -0.3
        assert monitor.check(healthy_row(update * 64, update, explained_variance=value)) == []


def test_explained_variance_not_judged_when_returns_are_constant():
    """A solved CartPole (every episode truncated at 500): return_std ~0.005, EV is noise."""
    limits = HealthThresholds()
    monitor = HealthMonitor(DISCRETE)
    for update in range(2 * limits.explained_variance_negative_updates):
        row = healthy_row(update * 64, update, explained_variance=-2.0, return_std=0.005)
        assert monitor.check(row) == []
    # once returns spread again the streak counts from zero
    found = []
    for update in range(limits.explained_variance_negative_updates):
        found += monitor.check(healthy_row(update * 64, update, explained_variance=-2.0))
    assert conditions(found) == ["explained_variance_negative"]


class FakeCheckpoint:
    def __init__(self):
        self.saved = []
        self.last_path = Path("/runs/x/checkpoints/step_000000000100.pt")

    def save_failure(self, trainer, row):
        self.saved.append(row["global_step"])
        return Path("/runs/x/checkpoints/nonfinite_step_000000000200.pt")


def fake_trainer(tmp_path):
    config = SimpleNamespace(total_steps=TOTAL)
    return SimpleNamespace(run_dir=tmp_path, config=config, action_space=DISCRETE)


def test_callback_warns_logs_jsonl_and_stops_after_saving(tmp_path):
    checkpoint = FakeCheckpoint()
    callback = HealthCallback(checkpoint=checkpoint)
    trainer = fake_trainer(tmp_path)
    callback.on_start(trainer)
    assert callback.monitor.total_steps == TOTAL and callback.monitor.action_space == DISCRETE
    with pytest.warns(TrainingHealthWarning, match="log_probs differ"):
        callback.on_update(trainer, healthy_row(100, 1, log_prob_mismatch=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.on_update(trainer, healthy_row(150, 2, log_prob_mismatch=0.5))  # no repeat
        with pytest.raises(NonFiniteError) as raised:
            callback.on_update(trainer, healthy_row(200, 3, value_loss=float("nan")))
    assert checkpoint.saved == [200]
    assert "nonfinite_step_000000000200.pt" in str(raised.value)
    assert "step_000000000100.pt" in str(raised.value) and "--resume" in str(raised.value)
    records = [json.loads(line) for line in (tmp_path / "health.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in records] == ["log_prob_mismatch", "nonfinite"]
    assert records[1]["severity"] == "fatal" and records[1]["global_step"] == 200
    assert [w.condition for w in callback.warnings] == ["log_prob_mismatch", "nonfinite"]


def test_callback_without_checkpoint_still_stops(tmp_path):
    callback = HealthCallback(emit=False)
    callback.on_start(fake_trainer(tmp_path))
    with pytest.raises(NonFiniteError, match="nonfinite_log_probs=1"):
        callback.on_update(None, healthy_row(10, 1, nonfinite_log_probs=1))


# --- integration with the real trainer (short CPU runs, in-process envs) ---------------


def make_trainer(tmp_path, callbacks, **options):
    from vecpg.run.config import resolve_config
    from vecpg.run.trainer import Trainer

    values = {"env": "CartPole-v1", "algo": "ppo", "vector": "sync", "seed": 1, **options}
    return Trainer(resolve_config(cli_values=values), tmp_path / "run", callbacks=callbacks)


def test_healthy_cartpole_run_raises_no_warning(tmp_path):
    health = HealthCallback()
    trainer = make_trainer(tmp_path, [health], total_steps=16_384)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)
        summary = trainer.train()
    assert summary["global_step"] >= 16_384
    assert health.warnings == []
    assert health.monitor.action_space == gym.spaces.Discrete(2)  # read from the trainer
    assert health.monitor.total_steps == 16_384
    assert not (tmp_path / "run" / "health.jsonl").exists()


class PoisonPolicy:
    """Sets every policy weight to NaN after update ``at`` (a blown-up optimizer step)."""

    def __init__(self, at: int):
        self.at = at

    def on_update(self, trainer, row):
        import torch

        if row["update"] == self.at:
            with torch.no_grad():
                for parameter in trainer.policy.parameters():
                    parameter.fill_(float("nan"))


def test_nan_policy_stops_the_run_after_saving(tmp_path):
    from vecpg.run.checkpoint import CheckpointCallback, list_checkpoints, load_latest

    saver = CheckpointCallback(512)
    health = HealthCallback(checkpoint=saver, emit=False)
    trainer = make_trainer(
        tmp_path,
        [saver, health, PoisonPolicy(at=3)],
        env="Pendulum-v1",
        num_envs=4,
        num_steps=64,
        total_steps=20_000,
    )
    with pytest.raises(NonFiniteError, match="nonfinite_log_probs=256") as raised:
        trainer.train()
    run_dir = tmp_path / "run"
    failure = run_dir / "checkpoints" / "nonfinite_step_000000001024.pt"
    assert failure.exists() and str(failure) in str(raised.value)
    assert [step for step, _ in list_checkpoints(run_dir)] == [512]  # no NaN in the rotation
    assert load_latest(run_dir).step == 512
    assert trainer.global_step == 1024  # stopped at once, did not continue on NaN
    records = [json.loads(line) for line in (run_dir / "health.jsonl").read_text().splitlines()]
    assert records[0]["condition"] == "nonfinite" and records[0]["severity"] == "fatal"


def test_planted_log_prob_mismatch_is_reported(tmp_path):
    health = HealthCallback(emit=False)
    trainer = make_trainer(tmp_path, [health], num_envs=4, num_steps=32, total_steps=512)
    collect = trainer.sampler.collect

    def collect_with_wrong_log_probs(*args, **kwargs):
        # what storing the log_prob of a clipped (not the sampled) action looks like
        result = collect(*args, **kwargs)
        trainer.buffer.log_probs += 0.05
        return result

    trainer.sampler.collect = collect_with_wrong_log_probs
    trainer.train()
    assert [w.condition for w in health.warnings] == ["log_prob_mismatch"]
    assert health.warnings[0].value == pytest.approx(0.05, rel=1e-3)
    assert health.warnings[0].global_step == 128
