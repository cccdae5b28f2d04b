"""Observation batches handed out from shared memory without a copy, for ``copy=True``.

Gymnasium's ``copy=True`` promises the caller an observation batch that no later step
changes. The plain way keeps it by copying the batch out of shared memory every step. For
images that copy is costly: 16 frames of 84x84x4 uint8 (450 KB) took ~27 µs per step in
the parent and slowed the parent's own envs through the cache it evicts; without it a step
of 16 such envs went from ~130 µs to ~80-90 µs on the 2-vCPU development VM.

Instead, the vector env keeps ``K`` spare observation batches ("slots") in shared memory.
Before a step it picks a slot the caller no longer uses, the workers write the step's
observations straight into it, and the caller gets arrays over that slot. A slot is in use
while any array handed out over it, or any view of those, is alive: each hand-out wraps
every leaf of the slot in a fresh root array (``np.asarray`` of a memoryview), and numpy
makes every view of the returned array keep that root alive as its ``base``
(``torch.from_numpy`` too, through the array). So when the weak references to all roots
are dead, nothing can see the slot any more and it may be overwritten. When the caller
holds on to all ``K`` slots (e.g. it keeps every batch in a list), the step falls back to
the copy; nothing changes for it.

Only worth it for large batches: below :data:`MIN_BATCH_BYTES` the copy costs less than
the bookkeeping. The slots cost ``K`` extra batches of shared memory, so batches so large
that they would take more than :data:`MAX_SLOTS_BYTES` are copied instead.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from workers.shared_layout import leaves, map_tree, split_first_axis

NUM_SLOTS = 3  # a training loop holds one batch (or two) while it asks for the next
MIN_BATCH_BYTES = 64 * 1024
MAX_SLOTS_BYTES = 512 * 1024 * 1024


def worth_slots(batch_bytes: int) -> bool:
    """Whether a ``copy=True`` observation batch of ``batch_bytes`` should use slots."""
    return MIN_BATCH_BYTES <= batch_bytes and NUM_SLOTS * batch_bytes <= MAX_SLOTS_BYTES


class ObservationSlots:
    """``K`` observation batches in shared memory, each reusable once nobody sees it.

    Args:
        slots: a tree of shared arrays ``[K, N, ...]`` (one leading row per slot).

    Example:
        >>> slots = ObservationSlots(np.zeros((2, 4, 3), dtype=np.float32))
        >>> first = slots.hand_out(slots.free_slot())
        >>> slots.free_slot()  # slot 0 is held by `first`
        1
        >>> del first
        >>> slots.free_slot()
        0
    """

    def __init__(self, slots: Any) -> None:
        self._trees = split_first_axis(slots)
        self.num_slots = len(self._trees)
        # Per slot, each leaf's shaped memoryview, made once: a hand-out then costs one
        # np.asarray per leaf (~1 µs warm, against ~1.8 µs for np.frombuffer and a
        # reshape, and ~4 µs for walking the tree and making the memoryviews each time).
        self._leaves = [[memoryview(array) for array in leaves(tree)] for tree in self._trees]
        self._single_array = isinstance(self._trees[0], np.ndarray)
        # Weak references to the roots of each slot's last hand-out.
        self._roots: list[list[weakref.ref]] = [[] for _ in range(self.num_slots)]

    def free_slot(self) -> int | None:
        """A slot no handed-out array can see, or None if the caller holds all of them."""
        for slot in range(self.num_slots):
            if self._is_free(slot):
                return slot
        return None

    def _is_free(self, slot: int) -> bool:
        for root in self._roots[slot]:
            if root() is not None:
                return False
        return True

    def hand_out(self, slot: int) -> Any:
        """Arrays over ``slot`` for the caller; the slot stays in use while any of them lives."""
        if not self._is_free(slot):
            raise ValueError(f"slot {slot} is still held by arrays handed out before")
        roots: list[weakref.ref] = []
        arrays = []
        for view in self._leaves[slot]:
            # Over the memoryview, not the slot's ndarray: a view of the ndarray would have
            # that array, shared by every hand-out, as its base, and so would all its views.
            root = np.asarray(view)
            if root.size:
                roots.append(weakref.ref(root))
            arrays.append(root)
        self._roots[slot] = roots
        if self._single_array:
            return arrays[0]
        remaining = iter(arrays)
        return map_tree(lambda _: next(remaining), self._trees[slot])
