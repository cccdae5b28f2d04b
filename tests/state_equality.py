"""Equality of nested training states (dicts/lists of tensors and plain values)."""

from __future__ import annotations

import torch


def assert_same(actual, expected, where="state"):
    """Recursive equality of nested dicts/lists of tensors and plain values."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same(left, right, f"{where}.{index}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    else:
        assert actual == expected, where
