"""The parent's side of the worker processes: start, message, wait, fail loudly, close.

One pipe per worker carries the commands one way and the answers the other, one short
message each way per command (:mod:`workers.protocol`); the data is in shared memory.
Waiting is ``select.poll`` with one persistent poll object; with ``spin_seconds > 0`` the
waiter first polls without blocking, yielding its core between polls, since a blocked
process pays a wakeup as costly as a cheap env's step (see ``benchmarks/README.md``).
Every wait has a timeout when one is set and a liveness check once a second; a worker
that dies shows up at once as end-of-file on its pipe.

A pool still open when the interpreter exits (a script that never called ``close``, or
ended with an exception) is closed by an exit hook. Without it the exit would hang:
multiprocessing's own exit hook stops daemon children with SIGTERM, which workers ignore
(stopping them is the parent's job), then waits for them forever.
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401 - registers its exit hook before ours (see below)
import os
import pickle
import select
import sys
import time
import weakref
from collections.abc import Iterable
from typing import Any

from vecpg.errors import WorkerError, WorkerTimeoutError, worker_error_class
from workers import protocol
from workers.loop import EnvRunner, failure, handle, start_runner, worker_main
from workers.protocol import Failure, WorkerSpec

_LIVENESS_CHECK_S = 1.0
_START_TIMEOUT_S = 300.0
_MAIN_GUARD_HINT = (
    "; the likely cause: the main script builds the vector env at import time. The "
    "'{method}' start method imports the main module in every worker, so put that code "
    'under `if __name__ == "__main__":`'
)


class LocalWorker:
    """One worker's share of the envs, stepped inside the parent process.

    It answers the same commands with the same handler as a worker process, but
    synchronously, and keeps its answer as an object (nothing is pickled): the answer is
    ready as soon as ``send`` returns. The pool sends to it last, so the parent steps this
    share while the worker processes step theirs.
    """

    def __init__(self, spec: WorkerSpec, shared_buffer: Any) -> None:
        self.spec = spec
        self.runner: EnvRunner | None = None
        self.answer: tuple[bytes, Any] | None = (protocol.DONE, None)
        try:
            self.runner = start_runner(spec, shared_buffer)
        except Exception as error:  # noqa: BLE001 - reported like a worker process's failure
            self.answer = (protocol.FAILED, failure(spec, None, error))

    def send(self, message: bytes) -> None:
        if self.runner is None:
            return  # construction failed; the failure is the pending answer
        tag, _ = protocol.HEADER.unpack_from(message)
        try:
            self.answer = handle(self.runner, tag, message[protocol.HEADER.size :])
        except Exception as error:  # noqa: BLE001 - KeyboardInterrupt still propagates
            self.answer = (protocol.FAILED, failure(self.spec, self.runner, error))

    def take_answer(self) -> tuple[bytes, Any]:
        answer, self.answer = self.answer, None
        assert answer is not None, "no answer pending from the local worker"
        return answer

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


# Pools not yet closed. The exit hook is registered after multiprocessing.util (imported
# above) registered its own, so it runs first: atexit calls hooks last-in, first-out.
_open_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_open_pools() -> None:
    for pool in list(_open_pools):
        if pool.owner_pid == os.getpid():  # not in a child forked with os.fork
            pool.close(timeout=1.0)


class WorkerPool:
    """Worker processes with one pipe each, sharing one memory buffer.

    Args:
        specs: one :class:`~workers.protocol.WorkerSpec` per worker; a last spec with
            ``in_parent=True`` is hosted by a :class:`LocalWorker` in this process.
        context: a ``multiprocessing`` context (its start method is used).
        shared_buffer: the ``RawArray`` every worker maps (None for a probe).
        daemon: start the workers as daemon processes.
        timeout: seconds construction or a command may take before
            :class:`WorkerTimeoutError`; None waits as long as the workers live.

    The constructor waits until every worker has built its envs; their answers are kept
    in ``first_answers`` (a probe's :class:`~workers.protocol.EnvDescription`).
    """

    def __init__(
        self,
        specs: list[WorkerSpec],
        context: Any,
        shared_buffer: Any,
        daemon: bool,
        timeout: float | None,
    ) -> None:
        self.specs = specs
        self.timeout = timeout
        self.start_method = context.get_start_method()
        self.processes: list[Any] = []
        self.connections: list[Any] = []
        self._fds: list[int] = []
        self._poller = select.poll()
        self._worker_of_fd: dict[int, int] = {}
        self._closed = False
        self.owner_pid = os.getpid()
        _open_pools.add(self)
        self.local: LocalWorker | None = None
        fork = self.start_method == "fork"
        remote_specs = [spec for spec in specs if not spec.in_parent]
        try:
            for spec in remote_specs:
                parent_end, child_end = context.Pipe(duplex=True)
                process = context.Process(
                    target=worker_main,
                    args=(spec, child_end, shared_buffer, parent_end if fork else None),
                    name=f"vecpg-worker-{spec.worker_index}",
                    daemon=daemon,
                )
                process.start()
                child_end.close()
                self.processes.append(process)
                self.connections.append(parent_end)
                self._fds.append(parent_end.fileno())
                self._poller.register(parent_end.fileno(), select.POLLIN)
                self._worker_of_fd[parent_end.fileno()] = spec.worker_index
            if len(remote_specs) < len(specs):
                # Built while the worker processes build theirs.
                self.local = LocalWorker(specs[-1], shared_buffer)
            # Starting a process (and, the first time, the fork server) is not the envs' time.
            self.collect(range(len(self.processes)), timeout=_START_TIMEOUT_S, phase="start")
            self.first_answers = self.collect(range(len(specs)), phase="construct")
        except BaseException:
            self.close(timeout=1.0)
            raise

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def send(self, worker: int, message: bytes) -> None:
        """Send a framed message (see :func:`workers.protocol.frame`) to ``worker``."""
        if worker == len(self.processes):
            assert self.local is not None
            self.local.send(message)
            return
        try:
            protocol.write_message(self._fds[worker], message)
        except OSError as error:
            raise self._death_error(worker, "while sending a command") from error

    def send_all(self, message: bytes) -> None:
        """Send ``message`` to every worker; the parent's share, last, is stepped here at once."""
        for worker in range(len(self.specs)):
            self.send(worker, message)

    def collect(
        self,
        workers: Iterable[int],
        *,
        timeout: float | None = None,
        spin_seconds: float = 0.0,
        phase: str = "step",
    ) -> dict[int, Any]:
        """Wait for one answer from each of ``workers`` (``timeout`` overrides the pool's).

        Returns:
            worker index -> the answer's value (None for a bare "done").

        Raises:
            WorkerError: a worker reported an exception or died.
            WorkerTimeoutError: the answers took longer than the timeout.
        """
        pending = set(workers)
        replies: dict[int, Any] = {}
        started = time.monotonic()
        while pending:
            # Answers that are already there cost one look, without the spin's bookkeeping:
            # the usual case once the parent has stepped its own share.
            for worker in self._ready(pending, 0.0) or self.wait_any(
                pending, timeout=timeout, started=started, spin_seconds=spin_seconds, phase=phase
            ):
                replies[worker] = self.receive(worker, phase)
                pending.discard(worker)
        return replies

    def wait_any(
        self,
        workers: set[int],
        *,
        timeout: float | None = None,
        started: float | None = None,
        spin_seconds: float = 0.0,
        phase: str = "step",
    ) -> list[int]:
        """Block until at least one of ``workers`` has an answer; return those that do.

        :class:`WorkerTimeoutError` once ``timeout`` (default: the pool's) seconds have
        passed since ``started`` (a ``time.monotonic()`` value, default now).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit is None else (started or time.monotonic()) + limit
        if spin_seconds > 0:
            spin_end = time.perf_counter() + spin_seconds
            while time.perf_counter() < spin_end:
                ready = self._ready(workers, 0)
                if ready:
                    return ready
                os.sched_yield()
        while True:
            wait_s = _LIVENESS_CHECK_S
            if deadline is not None:
                wait_s = min(wait_s, max(0.0, deadline - time.monotonic()))
            ready = self._ready(workers, wait_s)
            if ready:
                return ready
            for worker in workers:
                if worker < len(self.processes) and not self.processes[worker].is_alive():
                    raise self._death_error(worker, f"during {phase}")
            if deadline is not None and time.monotonic() >= deadline:
                waiting = sorted(workers)
                raise WorkerTimeoutError(
                    f"{', '.join(map(self._where, waiting))} did not finish {phase} within "
                    f"{limit:g} s (a hung env?); raise the timeout if the env is just slow",
                    worker_index=waiting[0],
                )

    def _ready(self, workers: set[int], timeout_s: float) -> list[int]:
        """Those of ``workers`` with an answer, waiting up to ``timeout_s`` for one."""
        ready = []
        local = len(self.processes)
        if local in workers and self.local is not None and self.local.answer is not None:
            ready.append(local)
        for fd, _ in self._poller.poll(0.0 if ready else timeout_s * 1000.0):
            worker = self._worker_of_fd[fd]
            if worker in workers and worker not in ready:
                ready.append(worker)
        return ready

    def receive(self, worker: int, phase: str = "step") -> Any:
        """Read one answer from ``worker`` (which must have one); raise its failure."""
        if worker == len(self.processes):
            assert self.local is not None
            tag, value = self.local.take_answer()
        else:
            try:
                tag, payload = protocol.read_message(self._fds[worker])
            except (EOFError, OSError) as error:
                raise self._death_error(worker, f"during {phase}") from error
            value = pickle.loads(payload) if payload else None
        if tag == protocol.DONE:
            return value
        if tag == protocol.FAILED:
            raise self._failure_error(value)
        raise WorkerError(f"worker {worker} sent an unknown message tag {tag!r}")

    def _failure_error(self, failure: Failure) -> WorkerError:
        env_index = 0 if self.specs[failure.worker_index].probe else failure.env_index
        where = self._where(failure.worker_index, env_index)
        original = None
        if failure.exception_class is not None:
            try:
                original = pickle.loads(failure.exception_class)
            except Exception:  # noqa: BLE001 - not importable here: WorkerError alone
                pass
        return worker_error_class(original)(
            f"{failure.exception_type} in {where} during {failure.phase}: {failure.message}",
            worker_index=failure.worker_index,
            env_index=env_index,
            exception_type=failure.exception_type,
            remote_traceback=failure.traceback,
        )

    def _death_error(self, worker: int, when: str) -> WorkerError:
        process = self.processes[worker]
        process.join(timeout=0.5)
        code = process.exitcode
        how = "is unresponsive" if code is None else f"exited with code {code}"
        if code is not None and code < 0:
            how = f"was killed by signal {-code}"
        hint = ""
        if (
            code == 1
            and when in ("during start", "during construct")
            and self.start_method != "fork"
        ):
            main = sys.modules.get("__main__")
            if getattr(main, "__file__", None):
                hint = _MAIN_GUARD_HINT.format(method=self.start_method)
        spec = self.specs[worker]
        return WorkerError(
            f"{self._where(worker)} {how} {when}{hint}",
            worker_index=worker,
            env_index=spec.env_start if spec.num_envs == 1 else None,
        )

    def _where(self, worker: int, env_index: int | None = None) -> str:
        """``env 3 (worker 1, in the parent process)``, ``worker 0 (envs 0-3)``..."""
        spec = self.specs[worker]
        name = "the probe worker" if spec.probe else f"worker {worker}"
        name += ", in the parent process" if spec.in_parent else ""
        if env_index is not None:
            return f"env {env_index} ({name})"
        last = spec.env_start + spec.num_envs - 1
        envs = f"env {last}" if last == spec.env_start else f"envs {spec.env_start}-{last}"
        return f"{name} ({envs})"

    def close(self, timeout: float = 5.0, terminate: bool = False) -> None:
        """Ask workers to exit, then terminate and kill stragglers; reap every process.

        Idempotent. ``timeout`` bounds the polite phase (skipped with ``terminate``).
        """
        if self._closed:
            return
        self._closed = True
        _open_pools.discard(self)
        if not terminate:
            for connection, process in zip(self.connections, self.processes, strict=True):
                if process.is_alive():
                    try:
                        protocol.write_message(connection.fileno(), protocol.frame(protocol.CLOSE))
                    except (OSError, ValueError):
                        pass
            deadline = time.monotonic() + timeout
            for process in self.processes:
                process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=5.0)  # SIGKILL cannot be refused; do not hang on it
        for connection in self.connections:
            try:
                self._poller.unregister(connection.fileno())
            except (KeyError, ValueError, OSError):
                pass
            connection.close()
        for process in self.processes:
            if process.exitcode is not None:  # close() refuses a process still running
                process.close()
        if self.local is not None:
            self.local.close()
