"""How each Gymnasium space is laid out in shared memory, and the array trees built on it.

A space maps to a *spec tree*: one :class:`ArraySpec` (per-env shape and dtype) per leaf,
nested in dicts and tuples that mirror Dict and Tuple spaces. A batch of ``N`` envs of that
space is then a tree of numpy arrays of shape ``[N, *spec.shape]`` that are views into one
shared buffer, so a worker writes env ``i``'s result into row ``i`` and the parent reads
the whole batch without any copy or pickling.

Spaces with no fixed-size layout (Text, Graph, Sequence, custom spaces) raise
:class:`UnsupportedSpaceError`; the vector env then falls back to pickling that field
through the worker's pipe. To give a custom space a layout, register it::

    @array_spec.register(MySpace)
    def _(space):
        return ArraySpec(shape=space.shape, dtype=space.dtype)

Imported by worker processes: numpy and gymnasium only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

# Each array starts on a cache-line boundary so two workers never write the same line
# through different fields.
_ALIGNMENT = 64


class UnsupportedSpaceError(TypeError):
    """The space has no fixed-size shared-memory layout."""


@dataclass(frozen=True)
class ArraySpec:
    """One leaf array: the shape and dtype of a single env's value."""

    shape: tuple[int, ...]
    dtype: np.dtype


@functools.singledispatch
def array_spec(space: spaces.Space) -> Any:
    """The spec tree of ``space``: an ArraySpec, or a dict/tuple of spec trees.

    Raises:
        UnsupportedSpaceError: the space has no fixed-size layout. Register one with
            ``@workers.shared_layout.array_spec.register(YourSpace)``.

    Example:
        >>> array_spec(spaces.Discrete(3))
        ArraySpec(shape=(), dtype=dtype('int64'))
    """
    raise UnsupportedSpaceError(
        f"{type(space).__name__} has no shared-memory layout; its values are pickled instead. "
        "Register one with @workers.shared_layout.array_spec.register"
        f"({type(space).__name__}) returning an ArraySpec."
    )


@array_spec.register(spaces.Box)
@array_spec.register(spaces.MultiDiscrete)
@array_spec.register(spaces.MultiBinary)
def _(space: spaces.Space) -> ArraySpec:
    return ArraySpec(tuple(space.shape or ()), np.dtype(space.dtype))


@array_spec.register(spaces.Discrete)
def _(space: spaces.Discrete) -> ArraySpec:
    return ArraySpec((), np.dtype(space.dtype))


@array_spec.register(spaces.Dict)
def _(space: spaces.Dict) -> dict[str, Any]:
    return {key: array_spec(subspace) for key, subspace in space.spaces.items()}


@array_spec.register(spaces.Tuple)
def _(space: spaces.Tuple) -> tuple[Any, ...]:
    return tuple(array_spec(subspace) for subspace in space.spaces)


def spec_or_none(space: spaces.Space) -> Any:
    """``array_spec(space)``, or None when the space must be pickled instead."""
    try:
        return array_spec(space)
    except UnsupportedSpaceError:
        return None


def map_tree(function: Any, *trees: Any) -> Any:
    """Apply ``function`` leaf-wise over trees of the same structure (dict/tuple/leaf).

    Leaves are anything else (numpy arrays here, torch tensors in the rollout buffer).
    """
    first = trees[0]
    if isinstance(first, dict):
        return {key: map_tree(function, *(tree[key] for tree in trees)) for key in first}
    if isinstance(first, tuple):
        return tuple(map_tree(function, *parts) for parts in zip(*trees, strict=True))
    return function(*trees)


def leaves(tree: Any) -> list[Any]:
    """The leaves of a tree in a fixed order (dict insertion order, tuple order)."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in leaves(value)]
    if isinstance(tree, tuple):
        return [leaf for value in tree for leaf in leaves(value)]
    return [tree]


def split_first_axis(arrays: Any) -> list[Any]:
    """A tree of ``[K, ...]`` arrays as ``K`` trees of views ``[...]``, one per leading row."""
    count = len(leaves(arrays)[0])
    return [map_tree(lambda array, k=k: array[k], arrays) for k in range(count)]


def write_row(arrays: Any, index: int, value: Any) -> None:
    """Write one env's ``value`` into row ``index`` of a tree of ``[N, ...]`` arrays."""
    map_tree(lambda array, part: array.__setitem__(index, part), arrays, value)


def read_row(arrays: Any, index: int, copy: bool) -> Any:
    """Row ``index`` of a tree of arrays: views (``copy=False``) or independent copies."""
    return map_tree(lambda array: array[index].copy() if copy else array[index], arrays)


def copy_tree(arrays: Any) -> Any:
    """A deep copy of a tree of arrays."""
    return map_tree(np.copy, arrays)


def take_rows(arrays: Any, indices: np.ndarray) -> Any:
    """Rows ``indices`` of every leaf (fancy indexing, so always a copy)."""
    return map_tree(lambda array: array[indices], arrays)


def assign_rows(arrays: Any, indices: np.ndarray | slice, values: Any) -> None:
    """``arrays[indices] = values`` leaf-wise (values is a batched tree)."""
    map_tree(lambda array, part: array.__setitem__(indices, part), arrays, values)


@dataclass(frozen=True)
class _Slot:
    """Where one leaf array lives in the buffer."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class Field:
    """A named spec tree with a leading batch shape, e.g. observations ``[N, *obs_shape]``."""

    name: str
    spec: Any
    leading_shape: tuple[int, ...]


class Layout:
    """Byte offsets of a set of fields inside one shared buffer.

    Built identically in the parent and in every worker from the same fields, so both
    sides agree on where every array lives without sending anything but the buffer.
    """

    def __init__(self, fields: list[Field]) -> None:
        self.fields = fields
        self._offsets: dict[str, Any] = {}
        offset = 0

        def place(spec: ArraySpec) -> _Slot:
            nonlocal offset
            offset = -(-offset // _ALIGNMENT) * _ALIGNMENT
            shape = (*field.leading_shape, *spec.shape)
            slot = _Slot(offset, shape, spec.dtype)
            offset += int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize
            return slot

        for field in fields:
            self._offsets[field.name] = map_tree(place, field.spec)
        self.nbytes = max(offset, _ALIGNMENT)

    def views(self, buffer: Any) -> dict[str, Any]:
        """Numpy views of every field into ``buffer`` (anything with the buffer protocol)."""
        memory = memoryview(buffer).cast("B")
        if memory.nbytes < self.nbytes:
            raise ValueError(f"shared buffer has {memory.nbytes} bytes, layout needs {self.nbytes}")

        def view(slot: _Slot) -> np.ndarray:
            count = int(np.prod(slot.shape, dtype=np.int64))
            flat = np.frombuffer(memory, slot.dtype, count=count, offset=slot.offset)
            return flat.reshape(slot.shape)

        return {name: map_tree(view, planned) for name, planned in self._offsets.items()}
