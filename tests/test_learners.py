"""Learners: whole updates against an independent CleanRL-style loop, metrics, masking, the
target-KL stop, torch.compile, and learning on CartPole (loss terms: tests/test_losses.py)."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from vecpg.advantages import gae, mc_returns
from vecpg.buffer import RolloutBuffer
from vecpg.learners import make_learner
from vecpg.policies import ActorCritic
from vecpg.run.config import resolve_config
from vecpg.run.trainer import Trainer

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


def cleanrl_ppo_update(policy, buffer, config, optimizer):
    """PPO's update written out as in CleanRL's ppo.py, independently of vecpg's learner
    (GAE from vecpg.advantages, itself tested against a per-element loop). Returns the
    number of gradient steps taken."""
    advantages, returns = gae(
        buffer.rewards, buffer.values, buffer.next_values, buffer.terminations,
        buffer.truncations, config.gamma, config.gae_lambda,
    )  # fmt: skip
    b_obs, b_actions = buffer.flat(buffer.observations), buffer.flat(buffer.actions)
    b_logprobs, b_values = buffer.log_probs.reshape(-1), buffer.values.reshape(-1)
    b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
    batch_size = b_logprobs.shape[0]
    minibatch_size = batch_size // config.num_minibatches
    steps = 0
    for _epoch in range(config.num_epochs):
        b_inds = torch.randperm(batch_size)
        for start in range(0, batch_size, minibatch_size):
            mb_inds = b_inds[start : start + minibatch_size]
            dist = policy.distribution(b_obs[mb_inds])
            newlogprob = dist.log_prob(b_actions[mb_inds])
            entropy = dist.entropy()
            newvalue = policy.value(b_obs[mb_inds])
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()
            approx_kl = ((ratio - 1) - logratio).mean()
            if config.target_kl is not None and approx_kl > config.target_kl:
                return steps
            mb_advantages = b_advantages[mb_inds]
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            pg_loss1 = -mb_advantages * ratio
            pg_loss2 = -mb_advantages * torch.clamp(
                ratio, 1 - config.clip_coef, 1 + config.clip_coef
            )
            pg_loss = torch.max(pg_loss1, pg_loss2).mean()
            v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
            v_clipped = b_values[mb_inds] + torch.clamp(
                newvalue - b_values[mb_inds], -config.clip_coef, config.clip_coef
            )
            v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
            v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - config.ent_coef * entropy_loss + v_loss * config.vf_coef
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            steps += 1
    return steps


@pytest.mark.parametrize("target_kl", [None, 0.003], ids=["all_epochs", "kl_stop"])
def test_ppo_update_matches_an_independent_cleanrl_loop(target_kl, tmp_path):
    """Same policy, rollout, shuffles and plain SGD: the same parameters after the update.
    The settings make every term count: clipping binds on part of the batch, the value
    loss is clipped, the entropy bonus is large, and with target_kl the update stops early."""
    import copy

    settings = dict(
        run_dir=str(tmp_path), num_minibatches=4, num_epochs=4, clip_coef=0.1,
        clip_value_loss=True, ent_coef=0.05, vf_coef=0.7, max_grad_norm=1.0,
        target_kl=target_kl,
    )  # fmt: skip
    trainer = filled_buffer("ppo", **settings)
    trainer.close()
    learner, config = trainer.learner, trainer.config
    reference = copy.deepcopy(trainer.policy)
    learner.optimizer = torch.optim.SGD(learner.parameters, lr=0.2)
    torch.manual_seed(7)
    metrics = learner.update(trainer.buffer)
    torch.manual_seed(7)
    steps = cleanrl_ppo_update(
        reference, trainer.buffer, config, torch.optim.SGD(reference.parameters(), lr=0.2)
    )
    assert metrics["clip_fraction"] > 0  # the clip range is exercised
    assert metrics["epochs_run"] * config.num_minibatches == steps
    if target_kl is None:
        assert steps == 16
    else:
        assert 1 <= steps < 16  # the stop fired, after at least one step
    for name, parameter in trainer.policy.named_parameters():
        torch.testing.assert_close(
            parameter, dict(reference.named_parameters())[name], msg=name, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("algo", ["a2c", "reinforce"])
def test_a2c_and_reinforce_updates_match_an_independent_loss(algo, tmp_path):
    """One SGD step of the learner against one step on the loss written out from the
    papers (Mnih et al. 2016; Williams 1992 with a baseline), over the same rollout."""
    import copy

    trainer = filled_buffer(
        algo, run_dir=str(tmp_path), ent_coef=0.05, vf_coef=0.7, max_grad_norm=1.0,
        normalize_advantages=False, num_steps=64,
    )  # fmt: skip
    trainer.close()
    buffer, config, learner = trainer.buffer, trainer.config, trainer.learner
    with torch.no_grad():  # away from the near-uniform initial policy, where dH = 0
        torch.manual_seed(3)
        trainer.policy.action_head.linear.weight.normal_(0.0, 0.3)
    reference = copy.deepcopy(trainer.policy)
    learner.optimizer = torch.optim.SGD(learner.parameters, lr=0.2)
    learner.update(buffer)

    observations, actions = buffer.flat(buffer.observations), buffer.flat(buffer.actions)
    dist = reference.distribution(observations)
    log_probs, entropy = dist.log_prob(actions), dist.entropy()
    values = reference.value(observations)
    if algo == "a2c":  # gae with lambda 1 (the a2c default) over the rollout
        advantages, returns = gae(
            buffer.rewards, buffer.values, buffer.next_values, buffer.terminations,
            buffer.truncations, config.gamma, config.gae_lambda,
        )  # fmt: skip
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        mask = torch.ones_like(returns)
    else:
        returns, complete = mc_returns(
            buffer.rewards, buffer.terminations, buffer.truncations, config.gamma
        )
        returns, mask = returns.reshape(-1), complete.reshape(-1).float()
        advantages = returns - values.detach()
    count = mask.sum()
    policy_loss = -(advantages * log_probs * mask).sum() / count
    value_loss = 0.5 * ((values - returns) ** 2 * mask).sum() / count
    entropy_bonus = (entropy * mask).sum() / count
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy_bonus
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), config.max_grad_norm)
    torch.optim.SGD(reference.parameters(), lr=0.2).step()
    for name, parameter in trainer.policy.named_parameters():
        torch.testing.assert_close(
            parameter, dict(reference.named_parameters())[name], msg=name, rtol=1e-5, atol=1e-6
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


@pytest.mark.slow
def test_compiled_loss_gives_the_eager_update(tmp_path):
    """``compile=True`` runs the same loss through torch.compile: the same update."""
    compiled = filled_buffer("a2c", run_dir=str(tmp_path / "compiled"), compile=True)
    compiled.close()
    eager = filled_buffer("a2c", run_dir=str(tmp_path / "eager"))
    eager.close()
    eager.policy.load_state_dict(compiled.policy.state_dict())
    first = compiled.learner.update(compiled.buffer)
    second = eager.learner.update(compiled.buffer)
    assert first["policy_loss"] == pytest.approx(second["policy_loss"], rel=1e-5)
    assert first["value_loss"] == pytest.approx(second["value_loss"], rel=1e-5)
    for a, b in zip(compiled.policy.parameters(), eager.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
