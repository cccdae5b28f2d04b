"""Learners: optimizers against torch.optim, metrics, masking, and learning on CartPole."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from vecpg.buffer import RolloutBuffer
from vecpg.learners import make_learner
from vecpg.learners.optim import Adam, RMSprop
from vecpg.policies import ActorCritic
from vecpg.run.config import resolve_config
from vecpg.run.trainer import Trainer

# vecpg's optimizers and the torch.optim ones they must match, with shared options.
OPTIMIZER_PAIRS = [
    (Adam, torch.optim.Adam, {"lr": 0.01, "eps": 1e-5}),
    (RMSprop, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.99, "eps": 1e-5}),
]

METRIC_KEYS = {
    "policy_loss",
    "value_loss",
    "entropy",
    "explained_variance",
    "grad_norm",
    "learning_rate",
    "nonfinite_log_probs",
    "log_prob_mismatch",
    "return_mean",
    "return_std",
    "advantage_mean",
    "advantage_std",
    "truncations",
    "terminations",
}


def _twin_models(ours, theirs, options, outputs):
    """Two identical small MLPs, one with vecpg's optimizer and one with torch.optim's."""
    torch.manual_seed(outputs)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, outputs))
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, outputs))
    twin.load_state_dict(model.state_dict())
    return model, twin, ours(model.parameters(), **options), theirs(twin.parameters(), **options)


@pytest.mark.parametrize("ours, theirs, options", OPTIMIZER_PAIRS)
def test_optimizers_match_torch_optim(ours, theirs, options):
    model, twin, mine, reference = _twin_models(ours, theirs, options, outputs=1)
    for step in range(6):
        inputs = torch.randn(8, 3)
        for network, optimizer in ((model, mine), (twin, reference)):
            optimizer.zero_grad()
            network(inputs).square().mean().backward()
            if step == 3:  # a parameter without gradient is skipped, as torch.optim does
                network[2].bias.grad = None
            optimizer.step()
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    restored = ours(twin.parameters(), **options)
    restored.load_state_dict(mine.state_dict())
    assert restored.step_count == mine.step_count


@pytest.mark.parametrize("ours, theirs, options", OPTIMIZER_PAIRS)
@pytest.mark.parametrize("max_norm", [0.05, math.inf])
def test_clip_and_step_matches_clip_grad_norm_then_torch_optim(ours, theirs, options, max_norm):
    model, twin, mine, reference = _twin_models(ours, theirs, options, outputs=2)
    for _ in range(5):
        inputs = torch.randn(16, 3)
        mine.zero_grad()
        model(inputs).square().mean().backward()
        norm = mine.clip_and_step(max_norm)
        reference.zero_grad()
        twin(inputs).square().mean().backward()
        expected_norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm)
        reference.step()
        torch.testing.assert_close(norm, expected_norm)
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_parameters_replaced_after_building_the_optimizer_is_an_error():
    model = torch.nn.Linear(3, 1)
    optimizer = Adam(model.parameters())
    model.weight.data = model.weight.data.clone()  # no longer a view of the flat vector
    model(torch.randn(4, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="moved or replaced"):
        optimizer.clip_and_step(1.0)


def filled_buffer(algo: str, action_space=None, **overrides):
    """A [T, N] buffer filled by the real trainer's sampler on CartPole / Pendulum."""
    env = "CartPole-v1" if action_space is None else "Pendulum-v1"
    values = {"algo": algo, "env": env, "vector": "sync", "num_envs": 4, "num_steps": 64}
    values.update(overrides)
    trainer = Trainer(resolve_config(cli_values=values), run_dir="/tmp/vecpg-test-unused")
    trainer.sampler.reset(seed=0)
    trainer.sampler.collect()
    return trainer


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce"])
def test_update_reports_the_contract_metrics(algo, tmp_path):
    trainer = filled_buffer(algo, run_dir=str(tmp_path))
    try:
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        metrics = trainer.learner.update(trainer.buffer)
    finally:
        trainer.close()
    expected = set(METRIC_KEYS)
    if algo == "ppo":
        expected |= {"approx_kl", "clip_fraction", "epochs_run"}
    if algo == "reinforce":
        expected |= {"complete_fraction"}
    assert expected <= set(metrics), expected - set(metrics)
    assert metrics["log_prob_mismatch"] < 1e-5  # the buffer holds the sent actions' log-probs
    assert metrics["nonfinite_log_probs"] == 0
    assert metrics["terminations"] > 0
    assert all(isinstance(value, float) for value in metrics.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters(), strict=True)
    )


def test_log_prob_mismatch_detects_a_buffer_that_lies(tmp_path):
    trainer = filled_buffer("ppo", run_dir=str(tmp_path))
    trainer.close()
    trainer.buffer.log_probs[3, 1] += 0.25
    trainer.buffer.log_probs[0, 0] = float("nan")
    metrics = trainer.learner.update(trainer.buffer)
    assert metrics["log_prob_mismatch"] == pytest.approx(0.25, abs=1e-5)
    assert metrics["nonfinite_log_probs"] == 1


def test_ppo_target_kl_stops_early_and_value_clipping_runs(tmp_path):
    trainer = filled_buffer(
        "ppo",
        run_dir=str(tmp_path),
        target_kl=1e-6,
        clip_value_loss=True,
        num_epochs=10,
        learning_rate=0.01,
    )
    trainer.close()
    metrics = trainer.learner.update(trainer.buffer)
    assert metrics["epochs_run"] < 10
    assert math.isfinite(metrics["value_loss"])


def test_learning_rate_anneals_linearly(tmp_path):
    trainer = filled_buffer("ppo", run_dir=str(tmp_path), learning_rate=0.002, anneal_lr=True)
    trainer.close()
    trainer.learner.set_progress(0.75)
    assert trainer.learner.update(trainer.buffer)["learning_rate"] == pytest.approx(0.0005)


@pytest.mark.parametrize("advantage", ["nstep", "gae"])
def test_a2c_runs_with_either_estimator(advantage, tmp_path):
    trainer = filled_buffer("a2c", run_dir=str(tmp_path), advantage=advantage, optimizer="adam")
    trainer.close()
    metrics = trainer.learner.update(trainer.buffer)
    assert math.isfinite(metrics["policy_loss"]) and math.isfinite(metrics["value_loss"])


def reinforce_gradient(buffer, policy, use_baseline):
    config = resolve_config(cli_values={"algo": "reinforce", "use_baseline": use_baseline})
    learner = make_learner(policy, config)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    learner.update(buffer)
    moved = [p.detach().clone() for p in policy.parameters()]
    policy.load_state_dict(state)
    return moved


@pytest.mark.parametrize("use_baseline", [True, False])
def test_reinforce_ignores_steps_whose_episode_did_not_end(use_baseline):
    """Changing the rewards of an unfinished episode must not change the update."""
    torch.manual_seed(0)
    space, actions = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2)
    policy = ActorCritic(space, actions, hidden_sizes=(8,))
    buffer = RolloutBuffer(space, actions, num_steps=6, num_envs=2)
    buffer.observations.copy_(torch.randn(6, 2, 3))
    buffer.actions.copy_(torch.randint(0, 2, (6, 2)))
    with torch.no_grad():
        buffer.log_probs.copy_(
            policy.evaluate(buffer.flat(buffer.observations), buffer.flat(buffer.actions))[0].view(
                6, 2
            )
        )
    buffer.rewards.fill_(1.0)
    buffer.terminations[3, 0] = True  # env 0: episode ends at step 3, steps 4-5 unfinished
    # env 1 never ends: every step of it is incomplete
    first = reinforce_gradient(buffer, policy, use_baseline)
    buffer.rewards[4:, 0] = 100.0
    buffer.rewards[:, 1] = -50.0
    second = reinforce_gradient(buffer, policy, use_baseline)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)
    buffer.rewards[1, 0] = 5.0  # a complete step does change the update
    third = reinforce_gradient(buffer, policy, use_baseline)
    assert any(not torch.allclose(a, b) for a, b in zip(first, third, strict=True))


@pytest.mark.parametrize("squash", [False, True], ids=["diag_gaussian", "tanh_gaussian"])
def test_pendulum_smoke_run_with_each_continuous_distribution(squash, tmp_path):
    config = resolve_config(
        cli_values={
            "env": "Pendulum-v1",
            "vector": "sync",
            "num_envs": 4,
            "num_steps": 32,
            "total_steps": 4 * 32 * 3,
            "squash": squash,
            "normalize_observations": True,
            "normalize_rewards": True,
            "run_dir": str(tmp_path),
        }
    )
    rows = []

    class Collect:
        def on_update(self, trainer, row):
            rows.append(row)

    trainer = Trainer(config, callbacks=[Collect()])
    summary = trainer.train()
    assert summary["updates"] == 3 and len(rows) == 3
    assert type(trainer.policy.distribution(torch.zeros(1, 3))).__name__ == (
        "TanhGaussian" if squash else "DiagGaussian"
    )
    for row in rows:
        for key in ("log_std_min", "log_std_mean", "log_std_max", "std_min", "std_mean", "std_max"):
            assert math.isfinite(row[key]), key
        assert row["log_prob_mismatch"] < 1e-4 and row["nonfinite_log_probs"] == 0
        assert row["truncations"] >= 0


def solve(algo: str, threshold: float, max_steps: int, seed: int, tmp_path, **overrides):
    values = {
        "algo": algo,
        "vector": "sync",
        "seed": seed,
        "total_steps": max_steps,
        "stop_at_return": threshold,
        "run_dir": str(tmp_path),
        **overrides,
    }
    return Trainer(resolve_config(cli_values=values)).train()


@pytest.mark.slow
def test_ppo_solves_cartpole(tmp_path):
    summary = solve("ppo", 475.0, 100_000, 1, tmp_path)
    assert summary["stop_reason"] == "stop_at_return", summary


@pytest.mark.slow
def test_a2c_learns_cartpole(tmp_path):
    summary = solve("a2c", 300.0, 100_000, 1, tmp_path)
    assert summary["stop_reason"] == "stop_at_return", summary


@pytest.mark.slow
def test_reinforce_learns_cartpole(tmp_path):
    summary = solve("reinforce", 150.0, 150_000, 1, tmp_path)
    assert summary["stop_reason"] == "stop_at_return", summary
