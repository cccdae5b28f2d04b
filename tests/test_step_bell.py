"""The step bell: sync steps rung through shared memory, with the pipe as the fallback.

Unit tests drive a worker's wait (``workers.loop._receive``) over a real pipe and a bell on
plain arrays, and the word-or-pipe rule of answers; the integration tests compare steps
against SyncVectorEnv with the bell off (as on machines other than x86-64) and with
workers asleep at some rings (each then needs a BELL message), and check the parent's two
ways of waiting: a short first wait when it spins, answers through the pipe when it never
does.
"""

from __future__ import annotations

import os
import select
import time
from types import SimpleNamespace

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from test_vector import MODES, assert_tree_equal, run_pair, short_cartpole

import vecpg.vector.env
from vecpg import SubprocVectorEnv
from workers import protocol
from workers.loop import _receive
from workers.step_bell import FIRST_SLEEP_MS, BellRinger, StepBell, bell_fields, bell_supported

RUNG = (protocol.STEP_ALL, b"")


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    yield read_end, write_end, poller
    os.close(read_end)
    os.close(write_end)


def bell_arrays(num_workers=1):
    """The shared words of ``bell_fields``, as plain arrays."""
    return {
        field.name: np.zeros(field.leading_shape, np.int64) for field in bell_fields(num_workers)
    }


def make_bell():
    arrays = bell_arrays()
    return arrays["step_bells"], arrays["workers_asleep"], StepBell(arrays, 0)


def spec(spin_seconds):
    return SimpleNamespace(spin_seconds=spin_seconds, parent_pid=os.getpid())


@pytest.mark.parametrize("spin_seconds", [1e-3, 0.0])
def test_a_ring_is_a_sync_step_and_is_taken_once(pipe, spin_seconds):
    read_end, write_end, poller = pipe
    rings, _, bell = make_bell()
    rings[0] = 1
    assert _receive(read_end, poller, spec(spin_seconds), bell) == RUNG
    # The same ring again is nothing new: the next command comes from the pipe.
    os.write(write_end, protocol.frame(protocol.CALL, b"payload"))
    assert _receive(read_end, poller, spec(spin_seconds), bell) == (protocol.CALL, b"payload")


@pytest.mark.parametrize("spin_seconds", [1e-3, 0.0])
def test_a_bell_message_for_a_ring_already_taken_is_skipped(pipe, spin_seconds):
    read_end, write_end, poller = pipe
    rings, _, bell = make_bell()
    rings[0] = 1
    assert bell.rung()  # the worker took the ring on its last look before blocking
    os.write(write_end, protocol.frame(protocol.BELL))  # the parent saw it asleep
    os.write(write_end, protocol.frame(protocol.RESET, b"seeds"))
    assert _receive(read_end, poller, spec(spin_seconds), bell) == (protocol.RESET, b"seeds")


def test_a_blocked_worker_raises_its_flag_and_wakes_on_a_bell_message(pipe):
    read_end, write_end, _ = pipe
    rings, asleep, bell = make_bell()
    flags_while_waiting = []

    class RingingPoller:
        """Stands for the parent: while the worker blocks, ring and send BELL (it sleeps)."""

        def poll(self, timeout_ms):
            flags_while_waiting.append(int(asleep[0]))
            rings[0] += 1
            os.write(write_end, protocol.frame(protocol.BELL))
            return [(read_end, select.POLLIN)]

    assert _receive(read_end, RingingPoller(), spec(0.0), bell) == RUNG
    assert flags_while_waiting == [1]
    assert asleep[0] == 0


def test_a_lost_ring_is_found_after_the_first_short_sleep(pipe):
    read_end, _, _ = pipe
    rings, _, bell = make_bell()
    timeouts = []

    class LostRingPoller:
        """The parent rang but missed the raised flag: no BELL message ever arrives."""

        def poll(self, timeout_ms):
            timeouts.append(timeout_ms)
            rings[0] += 1
            return []

    assert _receive(read_end, LostRingPoller(), spec(0.0), bell) == RUNG
    assert timeouts == [FIRST_SLEEP_MS]


def test_the_ringer_rings_every_bell_and_names_the_sleepers():
    arrays = bell_arrays(3)
    rings, asleep = arrays["step_bells"], arrays["workers_asleep"]
    asleep[:] = [0, 1, 0]
    ringer = BellRinger(arrays)
    bells = [StepBell(arrays, worker) for worker in range(3)]
    assert ringer.ring() == [1]
    assert rings.tolist() == [1, 1, 1]
    assert [bell.rung() for bell in bells] == [True] * 3
    asleep[:] = [1, 0, 1]
    assert ringer.ring() == [0, 2]
    assert [bell.rung() for bell in bells] == [True] * 3
    assert [bell.rung() for bell in bells] == [False] * 3


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_matches_sync_without_the_bell(monkeypatch, mode):
    """The path of machines other than x86-64: every sync step as a pipe message."""
    monkeypatch.setattr(vecpg.vector.env, "bell_supported", lambda: False)
    run_pair(short_cartpole, num_envs=5, steps=120, mode=mode, num_workers=2)


@pytest.mark.skipif(not bell_supported(), reason="the bell is used on x86-64 only")
def test_matches_sync_when_workers_sleep_between_steps(monkeypatch):
    """Rings to workers whose spin ran out: each needs a BELL message through the pipe."""
    fns = [short_cartpole] * 4
    ours = SubprocVectorEnv(fns, num_workers=2, wait="spin")
    reference = SyncVectorEnv(fns)
    sleepers = []
    ring = ours._pool._bell.ring
    monkeypatch.setattr(ours._pool._bell, "ring", lambda: sleepers.append(ring()) or sleepers[-1])
    try:
        assert_tree_equal(ours.reset(seed=5), reference.reset(seed=5), "reset")
        for t in range(40):
            if t % 10 == 0:
                time.sleep(0.02)  # not a timing test: lets the workers' 1 ms spin run out
            actions = np.full(4, t % 2, dtype=np.int64)
            assert_tree_equal(ours.step(actions), reference.step(actions), f"step {t}")
    finally:
        ours.close()
        reference.close()
    assert any(sleepers), "no ring found a sleeping worker"


def test_async_steps_and_resets_between_rung_steps():
    """Pipe commands and rings interleave: a stale BELL must not turn into a step."""
    with SubprocVectorEnv(
        [short_cartpole] * 4,
        num_workers=2,
        batch_size=2,
        wait="spin",
        autoreset_mode=AutoresetMode.NEXT_STEP,
    ) as envs:
        assert envs._pool._bell is not None or not vecpg.vector.env.bell_supported()
        envs.reset(seed=0)
        actions = np.zeros(4, dtype=np.int64)
        for _ in range(20):
            envs.step(actions)
            envs.send(actions[:2], env_ids=[0, 3])
            batch = envs.recv()
            assert sorted(batch.env_ids.tolist()) == [0, 3]
            envs.reset(seed=1)
        lengths = envs.call("_elapsed_steps")
        assert lengths == (0, 0, 0, 0)


def test_answers_go_through_the_word_unless_the_parent_sleeps():
    arrays = bell_arrays(2)
    ringer = BellRinger(arrays)
    bells = [StepBell(arrays, worker) for worker in range(2)]
    ringer.ring()
    assert [bell.rung() for bell in bells] == [True, True]
    assert not ringer.answered(0) and not ringer.answered(1)
    assert bells[0].answer()
    assert ringer.answered(0) and not ringer.answered(1)
    ringer.set_parent_asleep(True)
    assert not bells[1].answer()  # the worker must use the pipe: the parent blocks on it
    assert not ringer.answered(1)
    ringer.set_parent_asleep(False)
    # An answer to an earlier ring is no answer to the next one.
    ringer.ring()
    assert not ringer.answered(0)


@pytest.mark.skipif(not bell_supported(), reason="the bell is used on x86-64 only")
def test_a_blocked_parent_looks_again_after_its_first_short_wait():
    """A worker's answer may not be visible when the parent's first wait starts."""
    with SubprocVectorEnv(
        [short_cartpole] * 2, num_workers=1, parent_share=False, wait="spin"
    ) as envs:
        envs._spin_seconds = 0.0  # a parent that spins in general, but blocks at once here
        pool = envs._pool
        real_poller = pool._poller
        timeouts = []

        class HidingPoller:
            """Hides whatever the first, short wait would have seen."""

            def poll(self, timeout_ms):
                timeouts.append(timeout_ms)
                return [] if timeout_ms == FIRST_SLEEP_MS else real_poller.poll(timeout_ms)

        pool._poller = HidingPoller()
        try:
            envs.reset(seed=0)
            for _ in range(5):
                assert envs.step(np.zeros(2, dtype=np.int64))[1].tolist() == [1.0, 1.0]
        finally:
            pool._poller = real_poller
        assert FIRST_SLEEP_MS in timeouts
        assert envs._arrays["parent_asleep"][0] == 0  # lowered again after every wait


@pytest.mark.skipif(not bell_supported(), reason="the bell is used on x86-64 only")
def test_a_parent_without_a_core_gets_every_answer_through_the_pipe(monkeypatch):
    """2 workers on 2 cores: the parent blocks, its flag stays up, no answer waits in a word."""
    monkeypatch.setattr(vecpg.vector.env, "usable_cores", lambda: 2)
    with SubprocVectorEnv([short_cartpole] * 2, num_workers=2) as envs:
        assert envs.spin_seconds == 0.0
        envs.reset(seed=0)
        for _ in range(5):
            envs.step(np.zeros(2, dtype=np.int64))
        assert envs._arrays["parent_asleep"][0] == 1
        assert envs._arrays["step_answers"].tolist() == [0, 0]
        assert envs._arrays["step_bells"].tolist() == [5, 5]


@pytest.mark.parametrize(
    "wait, num_workers, rung",
    [("spin", 2, True), ("auto", 2, True), ("auto", 4, False), ("block", 2, False)],
)
def test_the_bell_is_used_where_workers_spin_long_enough(monkeypatch, wait, num_workers, rung):
    """Workers that spin 50 us (outnumbering the cores) or not at all get pipe messages."""
    monkeypatch.setattr(vecpg.vector.env, "usable_cores", lambda: 2)
    with SubprocVectorEnv([short_cartpole] * 4, num_workers=num_workers, wait=wait) as envs:
        assert (envs._pool._bell is not None) == (rung and bell_supported())
        assert all(spec.step_bell == (rung and bell_supported()) for spec in envs._pool.specs)
