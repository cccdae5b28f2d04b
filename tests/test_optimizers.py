"""vecpg's Adam and RMSprop against torch.optim's classes, the oracle they must equal.

Both run torch's own functional update, so parameters and state are compared bit for bit,
across learning-rate changes (annealing), a parameter without a gradient, and state dicts
moved between vecpg's optimizer and torch's in both directions.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.fresh_python import run_python
from vecpg.learners.optimizers import Adam, RMSprop

SETTINGS = {"lr": 3e-3, "eps": 1e-5}


def ours(kind: str, parameters):
    if kind == "adam":
        return Adam(parameters, **SETTINGS)
    return RMSprop(parameters, alpha=0.99, **SETTINGS)


def torchs(kind: str, parameters):
    if kind == "adam":
        return torch.optim.Adam(parameters, fused=True, **SETTINGS)
    return torch.optim.RMSprop(parameters, alpha=0.99, foreach=True, **SETTINGS)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    network.extra = torch.nn.Parameter(torch.ones(2))  # never in the loss: no gradient
    return network


def train(network, optimizer, steps: int, seed: int, learning_rates=()) -> None:
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if step < len(learning_rates):
            optimizer.param_groups[0]["lr"] = learning_rates[step]
        inputs = torch.randn(16, 4, generator=generator)
        optimizer.zero_grad()
        network(inputs).pow(2).mean().backward()
        optimizer.step()


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for left, right in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(left, right)


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_updates_equal_torch_optims_bit_for_bit_across_learning_rate_changes(kind):
    mine, reference = model(), model()
    optimizer, oracle = ours(kind, mine.parameters()), torchs(kind, reference.parameters())
    rates = [3e-3, 2e-3, 1e-3, 5e-4]
    train(mine, optimizer, 6, seed=1, learning_rates=rates)
    train(reference, oracle, 6, seed=1, learning_rates=rates)
    assert_same(mine, reference)
    assert not torch.equal(mine[0].weight, model()[0].weight)  # it did train
    # The parameter without a gradient is untouched and, as in torch, has no state.
    assert torch.equal(mine.extra, torch.ones(2)) and mine.extra not in optimizer.state
    for name, value in oracle.state[reference[0].weight].items():
        assert torch.equal(optimizer.state[mine[0].weight][name], value), name


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
@pytest.mark.parametrize("direction", ["ours to torch", "torch to ours"])
def test_state_dicts_move_between_ours_and_torchs(kind, direction):
    """Train a few steps, hand the state over, train on both: the same parameters."""
    source_network, destination_network, continued = model(), model(), model()
    if direction == "ours to torch":
        source, destination = ours(kind, source_network.parameters()), torchs
    else:
        source, destination = torchs(kind, source_network.parameters()), ours
    train(source_network, source, 3, seed=2, learning_rates=[1e-3])
    destination_network.load_state_dict(source_network.state_dict())
    handed_over = destination(kind, destination_network.parameters())
    # A deep copy: torch.optim's loading keeps the given tensors as its own state.
    handed_over.load_state_dict(copy.deepcopy(source.state_dict()))
    continued.load_state_dict(source_network.state_dict())
    train(source_network, source, 3, seed=3)
    train(destination_network, handed_over, 3, seed=3)
    assert handed_over.param_groups[0]["lr"] == 1e-3  # the saved learning rate applies
    assert_same(source_network, destination_network)
    assert not torch.equal(source_network[0].weight, continued[0].weight)


def test_loading_copies_the_state_so_training_leaves_the_given_dict_alone():
    network = model()
    optimizer = ours("adam", network.parameters())
    train(network, optimizer, 2, seed=4)
    saved = optimizer.state_dict()
    snapshot = {i: {k: v.clone() for k, v in s.items()} for i, s in saved["state"].items()}
    # The state dict holds the live tensors, as torch's does; loading must copy them.
    fresh = ours("adam", network.parameters())
    fresh.load_state_dict(saved)
    optimizer.state.clear()
    train(network, fresh, 2, seed=5)
    for index, state in snapshot.items():
        for name, value in state.items():
            assert torch.equal(saved["state"][index][name], value), (index, name)


def test_a_state_dict_for_other_parameters_or_another_optimizer_is_refused():
    network = model()
    adam = ours("adam", network.parameters())
    train(network, adam, 1, seed=6)
    smaller = ours("adam", list(network.parameters())[:2])
    with pytest.raises(ValueError, match="one group of 2"):
        smaller.load_state_dict(adam.state_dict())
    rmsprop = ours("rmsprop", network.parameters())
    train(network, rmsprop, 1, seed=7)
    before = copy.deepcopy(rmsprop.state_dict())
    with pytest.raises(ValueError, match="'exp_avg' is not one of RMSprop's"):
        rmsprop.load_state_dict(adam.state_dict())
    after = rmsprop.state_dict()  # refused before anything changed
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    for index, state in before["state"].items():
        for name, value in state.items():
            assert torch.equal(after["state"][index][name], value), (index, name)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([], lr=1e-3, eps=1e-5)


def test_building_and_stepping_does_not_import_torch_dynamo():
    """The reason these classes exist: torch.optim.Optimizer imports torch._dynamo."""
    result = run_python(
        "import sys, torch\n"
        "from vecpg.learners.optimizers import Adam, RMSprop\n"
        "layer = torch.nn.Linear(3, 2)\n"
        "for optimizer in (Adam(layer.parameters(), lr=1e-3, eps=1e-5),\n"
        "                  RMSprop(layer.parameters(), lr=1e-3, alpha=0.99, eps=1e-5)):\n"
        "    layer(torch.ones(1, 3)).sum().backward()\n"
        "    optimizer.step()\n"
        "    optimizer.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
        "torch.optim.Adam(layer.parameters())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]  # and torch's own class does import it
