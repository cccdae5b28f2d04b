"""The messages between the parent and a worker, and what a worker is told at start.

Every per-step field travels through shared memory (see :mod:`workers.shared_layout`);
the pipe carries one short message per worker per command. A message is one tag byte,
optionally followed by a pickled payload:

========  ==========  ======================================================
tag       direction   meaning
========  ==========  ======================================================
``S``     to worker   step every env of the worker (a sync step)
``s``     to worker   step the envs whose ``step_mask`` row is set (async steps)
``r``     to worker   reset: payload ``(seeds, options, mask)`` for its envs
``c``     to worker   call: payload ``(name, args, kwargs)``
``a``     to worker   set attribute: payload ``(name, values)``
``x``     to worker   close the envs and exit
``k``     to parent   done; payload (if any) :class:`Reply`, call results or
                      :class:`EnvDescription`
``e``     to parent   failed, payload :class:`Failure`; the worker then exits
========  ==========  ======================================================

A probe worker (``WorkerSpec.probe``) builds env 0 alone, answers ``k`` with its
:class:`EnvDescription` and exits: the parent learns the spaces and the step cost
without running env code itself.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

STEP_ALL = b"S"
STEP = b"s"
RESET = b"r"
CALL = b"c"
SET_ATTR = b"a"
CLOSE = b"x"

DONE = b"k"
FAILED = b"e"

INFO_MODES = ("full", "list", "episode", "none")

# Messages go straight through the pipe's file descriptor as a 5-byte header (tag, payload
# length) and the payload. multiprocessing's Connection would do the same framing with a few
# microseconds of Python overhead per call, which is a measurable share of a CartPole step.
HEADER = struct.Struct("<cI")


def frame(tag: bytes, payload: bytes = b"") -> bytes:
    """A message ready for :func:`write_message`."""
    return HEADER.pack(tag, len(payload)) + payload


def write_message(fd: int, message: bytes) -> None:
    """Write a whole framed message (blocking; loops over partial writes of large payloads)."""
    view = memoryview(message)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the other end of the pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


_BARE_DONE = HEADER.pack(DONE, 0)


def read_message(fd: int) -> tuple[bytes, bytes]:
    """Read one framed message: ``(tag, payload)``. Raises EOFError if the writer is gone."""
    header = os.read(fd, HEADER.size)
    if header == _BARE_DONE:  # a step's usual answer: one read, nothing to unpack
        return DONE, b""
    if len(header) < HEADER.size:
        if not header:
            raise EOFError("the other end of the pipe closed")
        header += _read_exact(fd, HEADER.size - len(header))
    tag, length = HEADER.unpack(header)
    return tag, (_read_exact(fd, length) if length else b"")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, sent once at start (picklable)."""

    worker_index: int
    env_start: int  # global index of this worker's first env
    env_fns: bytes  # cloudpickled list of env factories, one per env of this worker
    num_envs: int  # how many factories env_fns holds
    fields: list[Any]  # shared_layout.Field list, identical to the parent's
    observations_shared: bool  # False: observations are pickled through the pipe
    actions_shared: bool
    autoreset_mode: str  # gymnasium AutoresetMode value: "NextStep", "SameStep", "Disabled"
    info_mode: str  # one of INFO_MODES
    spin_seconds: float  # how long to poll before blocking while waiting for a command
    parent_pid: int
    observation_space: Any  # every env must have exactly these single-env spaces
    action_space: Any
    cpu: int | None = None  # pin the worker to this core
    in_parent: bool = False  # hosted by the parent process (vecpg.vector.worker_pool.LocalWorker)
    probe: bool = False  # describe env 0 (EnvDescription), then exit
    measure_step: bool = False  # a probe also times a few steps with random actions


@dataclass(frozen=True)
class EnvDescription:
    """What a probe worker reports about env 0: what the vector env copies from it."""

    observation_space: Any
    action_space: Any
    metadata: dict[str, Any]
    render_mode: str | None
    spec: Any
    step_seconds: float | None  # median seconds of one step; None if not measured or failed


@dataclass
class InfoEntry:
    """One env's info for this step, in the order Gymnasium merges them.

    ``final_info``/``final_observation`` are set for SAME_STEP autoresets; then ``info`` is
    the reset's info. ``final_observation`` is sent only when observations are pickled
    (otherwise it is in the shared final-observation buffer).
    """

    env_index: int
    info: dict[str, Any]
    ended: bool = False
    final_info: dict[str, Any] | None = None
    final_observation: Any = None


@dataclass
class Reply:
    """What a worker reports beyond the shared arrays after a step or reset."""

    infos: list[InfoEntry] = field(default_factory=list)
    observations: dict[int, Any] = field(default_factory=dict)  # env index -> obs, if pickled


@dataclass(frozen=True)
class Failure:
    """An exception raised in a worker, formatted there (tracebacks do not pickle)."""

    worker_index: int
    env_index: int | None
    exception_type: str
    message: str
    traceback: str
    phase: str  # "construct", "reset", "step", "call", ...
    exception_class: bytes | None = None  # the type pickled by reference, if it pickles
