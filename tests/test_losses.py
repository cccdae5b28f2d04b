"""Every loss term of PPO, A2C and REINFORCE, pinned against values worked out by hand on
small fixed tensors (the arithmetic is in the comments), and their gradients against
finite differences."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vecpg.distributions import Categorical, DiagGaussian
from vecpg.learners.a2c import a2c_loss
from vecpg.learners.ppo import approx_kl, clipped_surrogate_loss, ppo_loss, value_loss
from vecpg.learners.reinforce import reinforce_loss

# ratio r, advantage A, and PPO's per-sample term max(-A r, -A clip(r, 0.8, 1.2)):
RATIOS = torch.tensor([0.5, 0.9, 1.5, 1.5, 0.5])
ADVANTAGES = torch.tensor([1.0, -1.0, 1.0, -2.0, -1.0])
# max(-0.5, -0.8) = -0.5   (r below the range, A > 0: the unclipped term is the larger)
# max( 0.9,  0.9) =  0.9   (inside the range)
# max(-1.5, -1.2) = -1.2   (r above the range, A > 0: clipped)
# max( 3.0,  2.4) =  3.0   (r above the range, A < 0: unclipped)
# max( 0.5,  0.8) =  0.8   (r below the range, A < 0: clipped)
SURROGATE = (-0.5 + 0.9 - 1.2 + 3.0 + 0.8) / 5  # 0.6
# d/d log r of the per-sample term, / B: -A r where the unclipped term is taken, else 0.
SURROGATE_GRADIENT = torch.tensor([-0.5, 0.9, 0.0, 3.0, 0.0]) / 5

# value loss: V, R, V_old with clip 0.5
VALUES = torch.tensor([1.0, 0.2, -1.0])
RETURNS = torch.zeros(3)
OLD_VALUES = torch.tensor([0.0, 2.0, 0.0])
# unclipped (V - R)² = [1, 0.04, 1]                          -> 0.5 * 2.04 / 3
# clipped V_old + clip(V - V_old, ±0.5) = [0.5, 1.5, -0.5] -> (..)² = [0.25, 2.25, 0.25]
# per-sample max = [1, 2.25, 1]                             -> 0.5 * 4.25 / 3
VALUE_LOSS = 0.5 * 2.04 / 3
CLIPPED_VALUE_LOSS = 0.5 * 4.25 / 3


def test_clipped_surrogate_matches_the_hand_computed_value_and_gradient():
    log_ratio = RATIOS.log().requires_grad_(True)
    loss = clipped_surrogate_loss(log_ratio, ADVANTAGES, 0.2)
    assert loss.item() == pytest.approx(SURROGATE, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(log_ratio.grad, SURROGATE_GRADIENT)


def test_a_wider_clip_range_changes_the_surrogate():
    # clip 0.4: samples 3 and 5 become max(-1.5, -1.4) = -1.4 and max(0.5, 0.6) = 0.6
    wider = (-0.5 + 0.9 - 1.4 + 3.0 + 0.6) / 5
    assert clipped_surrogate_loss(RATIOS.log(), ADVANTAGES, 0.4).item() == pytest.approx(wider)


def test_value_loss_with_and_without_clipping():
    assert value_loss(VALUES, RETURNS, OLD_VALUES, None).item() == pytest.approx(VALUE_LOSS)
    clipped = value_loss(VALUES, RETURNS, OLD_VALUES, 0.5)
    assert clipped.item() == pytest.approx(CLIPPED_VALUE_LOSS)
    values = VALUES.clone().requires_grad_(True)
    value_loss(values, RETURNS, OLD_VALUES, 0.5).backward()
    # sample 2 takes the clipped (flat) term: no gradient; the others (V - R) / B
    torch.testing.assert_close(values.grad, torch.tensor([1.0, 0.0, -1.0]) / 3)


def test_approx_kl_is_the_k3_estimator():
    log_ratio = torch.tensor([0.0, 0.5, -0.5])
    # k3 = r - 1 - log r per sample: 0, e^0.5 - 1.5, e^-0.5 - 0.5
    expected = (0.0 + math.exp(0.5) - 1.5 + math.exp(-0.5) - 0.5) / 3
    assert approx_kl(log_ratio).item() == pytest.approx(expected)


def test_ppo_loss_adds_the_terms_with_their_coefficients_and_signs():
    config = SimpleNamespace(clip_coef=0.2, clip_value_loss=True, vf_coef=0.5, ent_coef=0.01)
    old_log_probs = torch.full((5,), -1.0)
    entropies = torch.tensor([0.6, 0.7, 0.8, 0.9, 1.0])
    values = torch.cat([VALUES, torch.zeros(2)])
    returns, old_values = torch.zeros(5), torch.cat([OLD_VALUES, torch.zeros(2)])
    terms = ppo_loss(
        old_log_probs + RATIOS.log(), entropies, values, old_log_probs,
        ADVANTAGES, returns, old_values, config,
    )  # fmt: skip
    # value clipping uses clip_coef 0.2: V_old + clip(V - V_old, ±0.2) = [0.2, 1.8, -0.2, 0, 0],
    # squared [0.04, 3.24, 0.04, 0, 0], per-sample max with [1, 0.04, 1, 0, 0]: sum 5.24
    clipped_value = 0.5 * 5.24 / 5
    assert terms.policy_loss.item() == pytest.approx(SURROGATE, abs=1e-6)
    assert terms.value_loss.item() == pytest.approx(clipped_value)
    assert terms.entropy_bonus.item() == pytest.approx(0.8)
    assert terms.loss.item() == pytest.approx(SURROGATE + 0.5 * clipped_value - 0.01 * 0.8)
    torch.testing.assert_close(terms.log_ratio, RATIOS.log())


def test_a2c_loss_terms():
    config = SimpleNamespace(vf_coef=0.25, ent_coef=0.1)
    log_probs = torch.tensor([-1.0, -2.0])
    advantages, entropies = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])
    values, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    terms = a2c_loss(log_probs, entropies, values, advantages, returns, config)
    # policy: -mean(A log p) = -(2 * -1 + -1 * -2) / 2 = 0
    # value: 0.5 * mean([1, 4]) = 1.25; entropy bonus: mean([0.5, 1.5]) = 1
    assert terms.policy_loss.item() == pytest.approx(0.0)
    assert terms.value_loss.item() == pytest.approx(1.25)
    assert terms.entropy_bonus.item() == pytest.approx(1.0)
    assert terms.loss.item() == pytest.approx(0.0 + 0.25 * 1.25 - 0.1 * 1.0)
    log_probs.requires_grad_(True)
    a2c_loss(log_probs, entropies, values, advantages, returns, config).loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantages / 2)  # d/d log p = -A / B


@pytest.mark.parametrize("use_baseline", [True, False])
def test_reinforce_loss_averages_over_complete_steps_only(use_baseline):
    config = SimpleNamespace(use_baseline=use_baseline, vf_coef=0.5, ent_coef=0.2)
    log_probs = torch.tensor([-1.0, -0.5, -3.0])
    entropies = torch.tensor([1.0, 0.5, 9.0])
    values, returns = torch.tensor([1.0, 1.0, 7.0]), torch.tensor([3.0, 2.0, -5.0])
    advantages = returns - values if use_baseline else returns
    complete = torch.tensor([True, True, False])
    terms = reinforce_loss(log_probs, entropies, values, advantages, returns, complete, config)
    # over the first two steps only:
    # baseline: A = [2, 1] -> -(2 * -1 + 1 * -0.5) / 2 = 1.25; value 0.5 * (4 + 1) / 2 = 1.25
    # no baseline: A = G = [3, 2] -> -(3 * -1 + 2 * -0.5) / 2 = 2.0; no value term
    # entropy bonus: (1 + 0.5) / 2 = 0.75
    policy, value = (1.25, 1.25) if use_baseline else (2.0, 0.0)
    assert terms.policy_loss.item() == pytest.approx(policy)
    assert terms.value_loss.item() == pytest.approx(value)
    assert terms.entropy_bonus.item() == pytest.approx(0.75)
    assert terms.loss.item() == pytest.approx(policy + 0.5 * value - 0.2 * 0.75)


def test_entropies_match_the_published_formulas():
    # Categorical: -sum p log p; Gaussian: sum (0.5 + 0.5 log(2 pi) + log sigma)
    probabilities = torch.tensor([[0.2, 0.3, 0.5]])
    expected = -sum(p * math.log(p) for p in (0.2, 0.3, 0.5))
    assert Categorical(probabilities.log()).entropy().item() == pytest.approx(expected)
    log_std = torch.tensor([[math.log(0.5), math.log(2.0)]])
    gaussian = DiagGaussian(torch.zeros(1, 2), log_std, (2,))
    expected = 2 * (0.5 + 0.5 * math.log(2 * math.pi)) + math.log(0.5) + math.log(2.0)
    assert gaussian.entropy().item() == pytest.approx(expected)


def test_loss_gradients_match_finite_differences():
    """Away from the clip kinks, autograd's gradients of every loss match central
    differences in float64 (with respect to the policy outputs)."""
    torch.manual_seed(0)
    batch = 6
    old_log_probs = torch.randn(batch, dtype=torch.float64)
    advantages = torch.randn(batch, dtype=torch.float64)
    returns = torch.randn(batch, dtype=torch.float64)
    old_values = returns + torch.tensor([0.1, -0.1, 2.0, -2.0, 0.05, 3.0], dtype=torch.float64)
    ppo_config = SimpleNamespace(clip_coef=0.2, clip_value_loss=True, vf_coef=0.5, ent_coef=0.01)
    a2c_config = SimpleNamespace(vf_coef=0.5, ent_coef=0.01)
    # ratios well inside and well outside the clip range, never on its edges
    log_ratio = torch.tensor([0.05, -0.05, 0.5, -0.5, 0.1, 0.9], dtype=torch.float64)
    log_probs = (old_log_probs + log_ratio).requires_grad_(True)
    entropies = torch.rand(batch, dtype=torch.float64).requires_grad_(True)
    values = (old_values + torch.randn(batch, dtype=torch.float64)).requires_grad_(True)

    def ppo(log_probs, entropies, values):
        return ppo_loss(
            log_probs, entropies, values, old_log_probs, advantages, returns, old_values, ppo_config
        ).loss

    def a2c(log_probs, entropies, values):
        return a2c_loss(log_probs, entropies, values, advantages, returns, a2c_config).loss

    assert torch.autograd.gradcheck(ppo, (log_probs, entropies, values))
    assert torch.autograd.gradcheck(a2c, (log_probs, entropies, values))
