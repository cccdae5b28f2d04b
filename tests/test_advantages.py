"""Advantage estimators against slow, per-env, per-episode references.

The references below use plain Python floats and nested loops: split each env's column
into episodes, then apply the textbook definition to every step of every episode. They
share no code with vecpg.advantages (no recursion with a carry, no masks).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vecpg.advantages import gae, mc_returns, nstep_returns

# --------------------------------------------------------------------------- references


def episodes_of(terminations: list[bool], truncations: list[bool]) -> list[tuple[int, int]]:
    """Inclusive (first, last) step ranges of one env's episodes inside the rollout."""
    ranges, first = [], 0
    for t in range(len(terminations)):
        if terminations[t] or truncations[t] or t == len(terminations) - 1:
            ranges.append((first, t))
            first = t + 1
    return ranges


def tail_value(t: int, terminations, next_values) -> float:
    """What the return is completed with after step t: nothing after a termination."""
    return 0.0 if terminations[t] else next_values[t]


def reference_gae(rewards, values, next_values, terminations, truncations, gamma, lam):
    """A_t = sum over k = t..end of the episode of (γλ)^(k-t) δ_k."""
    T, N = len(rewards), len(rewards[0])
    advantages = [[0.0] * N for _ in range(T)]
    for n in range(N):
        column = [[row[n] for row in table] for table in (rewards, values, next_values)]
        env_rewards, env_values, env_next_values = column
        env_terminations = [row[n] for row in terminations]
        env_truncations = [row[n] for row in truncations]
        for first, last in episodes_of(env_terminations, env_truncations):
            deltas = [
                env_rewards[k]
                + gamma * tail_value(k, env_terminations, env_next_values)
                - env_values[k]
                for k in range(first, last + 1)
            ]
            for t in range(first, last + 1):
                advantages[t][n] = sum(
                    (gamma * lam) ** (k - t) * deltas[k - first] for k in range(t, last + 1)
                )
    returns = [[advantages[t][n] + values[t][n] for n in range(N)] for t in range(T)]
    return advantages, returns


def reference_nstep(rewards, next_values, terminations, truncations, gamma, horizon):
    """Sum rewards t..s (s = min(t + n - 1, episode end)) and complete with step s's value."""
    T, N = len(rewards), len(rewards[0])
    returns = [[0.0] * N for _ in range(T)]
    for n in range(N):
        env_terminations = [row[n] for row in terminations]
        env_truncations = [row[n] for row in truncations]
        for first, last in episodes_of(env_terminations, env_truncations):
            for t in range(first, last + 1):
                stop = min(t + horizon - 1, last)
                total = sum(gamma ** (k - t) * rewards[k][n] for k in range(t, stop + 1))
                bootstrap = tail_value(stop, env_terminations, [row[n] for row in next_values])
                returns[t][n] = total + gamma ** (stop - t + 1) * bootstrap
    return returns


def reference_mc(rewards, terminations, truncations, gamma):
    """Discounted reward sums to the episode's end; complete iff the episode ended."""
    T, N = len(rewards), len(rewards[0])
    returns = [[0.0] * N for _ in range(T)]
    complete = [[False] * N for _ in range(T)]
    for n in range(N):
        env_terminations = [row[n] for row in terminations]
        env_truncations = [row[n] for row in truncations]
        for first, last in episodes_of(env_terminations, env_truncations):
            ended = env_terminations[last] or env_truncations[last]
            for t in range(first, last + 1):
                returns[t][n] = sum(gamma ** (k - t) * rewards[k][n] for k in range(t, last + 1))
                complete[t][n] = ended
    return returns, complete


# --------------------------------------------------------------------------- data


def tensors(*tables):
    return [torch.tensor(table, dtype=torch.float64) for table in tables]


def flags(table):
    return torch.tensor(table, dtype=torch.bool)


def random_rollout(rng: np.random.Generator, T: int, N: int, end_probability: float = 0.3):
    """Random rewards/values/flags; next_values at terminations are garbage (must be unused)."""
    rewards = rng.normal(size=(T, N)).tolist()
    values = rng.normal(size=(T, N)).tolist()
    terminations = (rng.random((T, N)) < end_probability).tolist()
    truncations = (rng.random((T, N)) < end_probability).tolist()
    next_values = rng.normal(size=(T, N))
    next_values[np.array(terminations)] = 1e6
    return rewards, values, next_values.tolist(), terminations, truncations


def consistent_next_values(values, terminations, truncations, rng):
    """next_values[t] = values[t + 1] inside episodes; fresh values where the episode ends."""
    T, N = len(values), len(values[0])
    next_values = rng.normal(size=(T, N)).tolist()
    for t, n in itertools.product(range(T - 1), range(N)):
        if not (terminations[t][n] or truncations[t][n]):
            next_values[t][n] = values[t + 1][n]
    return next_values


EDGE_PATTERNS = {
    "no_flags": lambda T: ([], []),
    "terminate_first_step": lambda T: ([0], []),
    "terminate_last_step": lambda T: ([T - 1], []),
    "truncate_first_step": lambda T: ([], [0]),
    "truncate_last_step": lambda T: ([], [T - 1]),
    "consecutive_terminations": lambda T: ([1, 2, 3], []),
    "consecutive_truncations": lambda T: ([], [1, 2, 3]),
    "both_flags_same_step": lambda T: ([2, 4], [2, 5]),
    "every_step_ends": lambda T: (list(range(T)), list(range(0, T, 2))),
    "truncate_then_terminate": lambda T: ([3], [2]),
}


def edge_rollout(pattern: str, T: int = 7, N: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    rewards, values, next_values, _, _ = random_rollout(rng, T, N)
    terminated_steps, truncated_steps = EDGE_PATTERNS[pattern](T)
    terminations = [[False] * N for _ in range(T)]
    truncations = [[False] * N for _ in range(T)]
    for t in terminated_steps:
        terminations[t][1] = True  # env 1 follows the pattern; env 0 and env 2 never end
    for t in truncated_steps:
        truncations[t][1] = True
    return rewards, values, next_values, terminations, truncations


def assert_matches(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), rtol=1e-9, atol=1e-9
    )


# --------------------------------------------------------------------------- hand-computed


def test_gae_hand_computed_with_truncation_and_termination():
    # One env, γ = 0.5, λ = 0.5. Step 1 truncates (bootstrap from V(final obs) = 4),
    # step 3 terminates (next_values[3] = 99 must be ignored).
    rewards, values = tensors([[1.0], [2.0], [0.0], [3.0]], [[1.0], [2.0], [1.0], [2.0]])
    next_values = torch.tensor([[2.0], [4.0], [2.0], [99.0]], dtype=torch.float64)
    terminations = flags([[False], [False], [False], [True]])
    truncations = flags([[False], [True], [False], [False]])
    advantages, returns = gae(rewards, values, next_values, terminations, truncations, 0.5, 0.5)
    # δ = [1 + 1 - 1, 2 + 2 - 2, 0 + 1 - 1, 3 - 2] = [1, 2, 0, 1]
    # A3 = 1; A2 = 0 + 0.25 * 1 = 0.25; A1 = 2 (λ-chain cut); A0 = 1 + 0.25 * 2 = 1.5
    assert_matches(advantages, [[1.5], [2.0], [0.25], [1.0]])
    assert_matches(returns, [[2.5], [4.0], [1.25], [3.0]])


def test_gae_last_step_bootstraps_unless_it_ended():
    rewards, values = tensors([[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]])
    next_values = torch.tensor([[10.0, 10.0, 10.0]], dtype=torch.float64)
    terminations = flags([[False, True, True]])
    truncations = flags([[False, False, True]])
    advantages, _ = gae(rewards, values, next_values, terminations, truncations, 0.9, 0.95)
    # Still running: 1 + 0.9 * 10; terminated (alone or with truncation): no bootstrap.
    assert_matches(advantages, [[10.0, 1.0, 1.0]])


def test_nstep_hand_computed():
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=torch.float64)
    next_values = torch.tensor([[10.0], [20.0], [30.0], [40.0], [50.0]], dtype=torch.float64)
    terminations = flags([[False], [False], [False], [False], [False]])
    truncations = flags([[False], [True], [False], [False], [False]])
    returns = nstep_returns(rewards, next_values, terminations, truncations, 0.5, 3)
    # t0: 1 + .5*2 + .25*20 (truncation at 1) = 7;  t1: 2 + .5*20 = 12
    # t2: 3 + .5*4 + .25*5 + .125*50 = 12.5;  t3: 4 + .5*5 + .25*50 = 19;  t4: 5 + .5*50 = 30
    assert_matches(returns, [[7.0], [12.0], [12.5], [19.0], [30.0]])


def test_mc_hand_computed_with_partial_episode():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    terminations = flags([[False, False], [False, False], [False, False]])
    truncations = flags([[True, False], [False, False], [False, False]])
    returns, complete = mc_returns(rewards, terminations, truncations, 0.5)
    # env 0: a one-step truncated episode (no bootstrap), then a partial one; env 1 partial.
    assert_matches(returns, [[1.0, 3.5], [1.5, 3.0], [1.0, 2.0]])
    assert complete.tolist() == [[True, False], [False, False], [False, False]]


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("pattern", sorted(EDGE_PATTERNS))
@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (0.5, 0.0), (1.0, 1.0), (0.0, 0.7)])
def test_gae_matches_reference_on_edge_patterns(pattern, gamma, lam):
    rewards, values, next_values, terminations, truncations = edge_rollout(pattern)
    expected_advantages, expected_returns = reference_gae(
        rewards, values, next_values, terminations, truncations, gamma, lam
    )
    advantages, returns = gae(
        *tensors(rewards, values, next_values), flags(terminations), flags(truncations), gamma, lam
    )
    assert_matches(advantages, expected_advantages)
    assert_matches(returns, expected_returns)


@pytest.mark.parametrize("pattern", sorted(EDGE_PATTERNS))
@pytest.mark.parametrize("horizon", [1, 2, 3, 7, 100])
def test_nstep_matches_reference_on_edge_patterns(pattern, horizon):
    rewards, _, next_values, terminations, truncations = edge_rollout(pattern)
    expected = reference_nstep(rewards, next_values, terminations, truncations, 0.9, horizon)
    returns = nstep_returns(
        *tensors(rewards, next_values), flags(terminations), flags(truncations), 0.9, horizon
    )
    assert_matches(returns, expected)


@pytest.mark.parametrize("pattern", sorted(EDGE_PATTERNS))
def test_mc_matches_reference_on_edge_patterns(pattern):
    rewards, _, _, terminations, truncations = edge_rollout(pattern)
    expected_returns, expected_complete = reference_mc(rewards, terminations, truncations, 0.9)
    returns, complete = mc_returns(*tensors(rewards), flags(terminations), flags(truncations), 0.9)
    assert_matches(returns, expected_returns)
    assert complete.dtype == torch.bool
    assert complete.tolist() == expected_complete


@pytest.mark.parametrize("seed", range(20))
def test_every_estimator_matches_reference_on_random_rollouts(seed):
    rng = np.random.default_rng(seed)
    T, N = int(rng.integers(1, 16)), int(rng.integers(1, 6))
    rewards, values, next_values, terminations, truncations = random_rollout(
        rng, T, N, end_probability=float(rng.uniform(0.0, 0.6))
    )
    gamma, lam, horizon = float(rng.uniform()), float(rng.uniform()), int(rng.integers(1, T + 3))
    masks = flags(terminations), flags(truncations)
    advantages, returns = gae(*tensors(rewards, values, next_values), *masks, gamma, lam)
    expected_advantages, expected_returns = reference_gae(
        rewards, values, next_values, terminations, truncations, gamma, lam
    )
    assert_matches(advantages, expected_advantages)
    assert_matches(returns, expected_returns)
    assert_matches(
        nstep_returns(*tensors(rewards, next_values), *masks, gamma, horizon),
        reference_nstep(rewards, next_values, terminations, truncations, gamma, horizon),
    )
    mc, complete = mc_returns(*tensors(rewards), *masks, gamma)
    expected_mc, expected_complete = reference_mc(rewards, terminations, truncations, gamma)
    assert_matches(mc, expected_mc)
    assert complete.tolist() == expected_complete


# --------------------------------------------------------------------------- properties


@st.composite
def rollouts(draw):
    T = draw(st.integers(1, 10))
    N = draw(st.integers(1, 4))
    reals = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
    bits = st.booleans()

    def table(elements):
        return draw(st.lists(st.lists(elements, min_size=N, max_size=N), min_size=T, max_size=T))

    return table(reals), table(reals), table(reals), table(bits), table(bits)


unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(rollouts(), unit, unit, st.integers(1, 12))
def test_property_estimators_match_references(rollout, gamma, lam, horizon):
    rewards, values, next_values, terminations, truncations = rollout
    masks = flags(terminations), flags(truncations)
    advantages, _ = gae(*tensors(rewards, values, next_values), *masks, gamma, lam)
    expected, _ = reference_gae(rewards, values, next_values, terminations, truncations, gamma, lam)
    torch.testing.assert_close(
        advantages, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=1e-7
    )
    returns = nstep_returns(*tensors(rewards, next_values), *masks, gamma, horizon)
    expected = reference_nstep(rewards, next_values, terminations, truncations, gamma, horizon)
    torch.testing.assert_close(
        returns, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=1e-7
    )
    mc, complete = mc_returns(*tensors(rewards), *masks, gamma)
    expected, expected_complete = reference_mc(rewards, terminations, truncations, gamma)
    torch.testing.assert_close(
        mc, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=1e-7
    )
    assert complete.tolist() == expected_complete


@settings(max_examples=40, deadline=None)
@given(rollouts(), unit, st.integers(0, 10_000))
def test_property_identities_with_consistent_values(rollout, gamma, seed):
    rewards, values, _, terminations, truncations = rollout
    rng = np.random.default_rng(seed)
    next_values = consistent_next_values(values, terminations, truncations, rng)
    T = len(rewards)
    arguments = (*tensors(rewards, values, next_values), flags(terminations), flags(truncations))
    rewards_t, values_t, next_values_t, terminations_t, truncations_t = arguments
    masks = (terminations_t, truncations_t)

    # λ = 1: GAE returns are the returns bootstrapped only where the episode or rollout is cut.
    _, lambda_one_returns = gae(*arguments, gamma, 1.0)
    full_returns = nstep_returns(
        rewards_t, next_values_t, *masks, gamma, T + int(rng.integers(0, 3))
    )
    torch.testing.assert_close(lambda_one_returns, full_returns, atol=1e-7, rtol=1e-7)

    # λ = 0: advantages are one-step TD errors r_t + γ V(s_{t+1}) - V(s_t), with V(s_{t+1})
    # read from values[t + 1] inside episodes and from next_values where the episode is cut.
    td_errors = [[0.0] * len(rewards[0]) for _ in range(T)]
    for t, n in itertools.product(range(T), range(len(rewards[0]))):
        if terminations[t][n]:
            following = 0.0
        elif truncations[t][n] or t == T - 1:
            following = next_values[t][n]
        else:
            following = values[t + 1][n]
        td_errors[t][n] = rewards[t][n] + gamma * following - values[t][n]
    lambda_zero_advantages, lambda_zero_returns = gae(*arguments, gamma, 0.0)
    torch.testing.assert_close(
        lambda_zero_advantages, torch.tensor(td_errors, dtype=torch.float64), atol=1e-7, rtol=1e-7
    )
    # ... and λ = 0 returns are the one-step returns.
    one_step = nstep_returns(rewards_t, next_values_t, *masks, gamma, 1)
    torch.testing.assert_close(lambda_zero_returns, one_step, atol=1e-7, rtol=1e-7)


@settings(max_examples=40, deadline=None)
@given(rollouts(), unit)
def test_property_mc_is_nstep_with_zero_values(rollout, gamma):
    rewards, _, _, terminations, truncations = rollout
    masks = flags(terminations), flags(truncations)
    rewards_t = tensors(rewards)[0]
    mc, _ = mc_returns(rewards_t, *masks, gamma)
    nstep = nstep_returns(rewards_t, torch.zeros_like(rewards_t), *masks, gamma, len(rewards))
    torch.testing.assert_close(mc, nstep, atol=1e-9, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(rollouts(), unit, unit, st.integers(1, 12), st.randoms(use_true_random=False))
def test_property_permuting_envs_permutes_outputs(rollout, gamma, lam, horizon, random):
    rewards, values, next_values, terminations, truncations = rollout
    arguments = (*tensors(rewards, values, next_values), flags(terminations), flags(truncations))
    permutation = list(range(len(rewards[0])))
    random.shuffle(permutation)
    permuted = tuple(tensor[:, permutation] for tensor in arguments)
    rewards_t, values_t, next_values_t, terminations_t, truncations_t = arguments
    p_rewards, p_values, p_next_values, p_terminations, p_truncations = permuted

    for original, shuffled in zip(
        gae(*arguments, gamma, lam), gae(*permuted, gamma, lam), strict=True
    ):
        torch.testing.assert_close(original[:, permutation], shuffled)
    torch.testing.assert_close(
        nstep_returns(rewards_t, next_values_t, terminations_t, truncations_t, gamma, horizon)[
            :, permutation
        ],
        nstep_returns(p_rewards, p_next_values, p_terminations, p_truncations, gamma, horizon),
    )
    for original, shuffled in zip(
        mc_returns(rewards_t, terminations_t, truncations_t, gamma),
        mc_returns(p_rewards, p_terminations, p_truncations, gamma),
        strict=True,
    ):
        assert torch.equal(original[:, permutation], shuffled)


def test_changing_one_env_leaves_the_others_unchanged():
    rng = np.random.default_rng(3)
    rewards, values, next_values, terminations, truncations = random_rollout(rng, 9, 4)
    arguments = [*tensors(rewards, values, next_values), flags(terminations), flags(truncations)]
    before = gae(*arguments, 0.9, 0.9)[0], nstep_returns(*arguments[:1], *arguments[2:], 0.9, 4)
    for tensor in arguments:
        tensor[:, 2] = (
            torch.logical_not(tensor[:, 2]) if tensor.dtype == torch.bool else -tensor[:, 2] * 7
        )
    after = gae(*arguments, 0.9, 0.9)[0], nstep_returns(*arguments[:1], *arguments[2:], 0.9, 4)
    for old, new in zip(before, after, strict=True):
        keep = [0, 1, 3]
        assert torch.equal(old[:, keep], new[:, keep])
        assert not torch.equal(old[:, 2], new[:, 2])


# --------------------------------------------------------------------------- dtypes, errors


def test_float_masks_and_float32_match_bool_masks_and_float64():
    rng = np.random.default_rng(7)
    rewards, values, next_values, terminations, truncations = random_rollout(rng, 12, 3)
    next_values = rng.normal(size=(12, 3)).tolist()  # no 1e6 garbage, to compare in float32
    exact = gae(
        *tensors(rewards, values, next_values), flags(terminations), flags(truncations), 0.99, 0.95
    )
    single = gae(
        *(tensor.float() for tensor in tensors(rewards, values, next_values)),
        torch.tensor(terminations, dtype=torch.float32),
        torch.tensor(truncations, dtype=torch.float32),
        0.99,
        0.95,
    )
    for high, low in zip(exact, single, strict=True):
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), high, atol=1e-5, rtol=1e-5)


def test_estimators_do_not_modify_their_inputs():
    rng = np.random.default_rng(11)
    arguments = [
        *tensors(*random_rollout(rng, 6, 2)[:3]),
        *map(flags, random_rollout(rng, 6, 2)[3:]),
    ]
    copies = [tensor.clone() for tensor in arguments]
    gae(*arguments, 0.9, 0.9)
    nstep_returns(arguments[0], *arguments[2:], 0.9, 3)
    mc_returns(arguments[0], *arguments[3:], 0.9)
    for tensor, copy in zip(arguments, copies, strict=True):
        assert torch.equal(tensor, copy)


def test_bad_arguments_raise_value_error():
    rewards = torch.zeros(4, 2)
    masks = torch.zeros(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="values has shape"):
        gae(rewards, torch.zeros(4, 3), rewards, masks, masks, 0.9, 0.9)
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        mc_returns(torch.zeros(4), masks[:, 0], masks[:, 0], 0.9)
    with pytest.raises(ValueError, match="gamma"):
        mc_returns(rewards, masks, masks, 1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(rewards, rewards, rewards, masks, masks, 0.9, -0.1)
    for horizon in (0, 2.0, True):
        with pytest.raises(ValueError, match="n must be"):
            nstep_returns(rewards, rewards, masks, masks, 0.9, horizon)
