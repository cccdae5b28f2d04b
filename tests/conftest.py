"""Shared fixtures. Every test is checked for leaked child processes and /dev/shm entries."""

from __future__ import annotations

import os
import time

import psutil
import pytest

# Long-lived helpers that multiprocessing starts once per test session and reuses.
_SESSION_HELPERS = ("forkserver", "resource_tracker", "semaphore_tracker")


def _live_children() -> dict[int, str]:
    children = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if any(helper in cmdline for helper in _SESSION_HELPERS):
            continue
        children[child.pid] = cmdline
    return children


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _wait_until(condition, timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def no_leaked_processes_or_shared_memory(request):
    """Fail a test that leaves a child process or a /dev/shm entry behind.

    Tests marked ``allow_children`` (e.g. a module-scoped Ray instance) skip the process check.
    """
    children_before = set(_live_children())
    shm_before = _shm_entries()
    yield
    if request.node.get_closest_marker("allow_children") is None:
        _wait_until(lambda: not (set(_live_children()) - children_before), timeout_s=10.0)
        leaked = {pid: cmd for pid, cmd in _live_children().items() if pid not in children_before}
        for pid in leaked:  # reap them so one leak does not fail every later test
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        assert not leaked, f"test left child processes running: {leaked}"
    _wait_until(lambda: not (_shm_entries() - shm_before), timeout_s=5.0)
    leaked_shm = _shm_entries() - shm_before
    assert not leaked_shm, f"test left entries in /dev/shm: {sorted(leaked_shm)}"
