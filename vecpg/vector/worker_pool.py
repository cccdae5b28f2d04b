"""The parent's side of the worker processes: start, message, wait, fail loudly, close.

Signalling design (the per-step cost that decides whether subprocesses pay at all):

* One pipe per worker, at most one message each way per worker per step, and none for a
  plain sync step on x86-64: the parent rings each worker's step bell (a sequence number
  in shared memory that a spinning worker sees without a system call) and the worker
  answers by storing that number in its answer word, which the spinning parent sees the
  same way (:mod:`workers.step_bell`). A process blocked on its pipe, a step with infos to
  report, a failure, and every other command use 5-byte messages (``S`` to step, ``k``
  for done). Actions, observations, rewards, flags, final observations and episode
  statistics are already in shared memory, so nothing is pickled on the hot path; a worker
  sends a pickled payload only when it has non-empty infos (in ``infos="full"`` mode) or
  observations of a space with no shared layout. The bell took a ``write``, a ``poll`` and
  a ``read`` per direction (~3 µs each) off the critical path: 84x84x4 x16 +8.2% (paired
  ratio of 11 alternating windows in one process), CartPole-v1 x32 unchanged.
* Waiting is ``select.poll`` on the workers' pipes with one persistent poll object (a
  ``multiprocessing.connection.wait`` call builds a selector each time and costs ~10x more).
  With ``spin_seconds > 0`` the waiter first polls without blocking for that long, calling
  ``sched_yield`` between polls, then blocks. A blocked process costs a wakeup when its
  answer comes: ~8 µs when the waker runs on the same core, 50-80 µs across cores on the
  2-vCPU development VM (a halted virtual CPU must be woken by the hypervisor). Yielding
  makes the spin cheap for a process that has work: when processes outnumber cores, the
  spinner gives its turn away at once. The vector env picks the bound (``wait="auto"``).
* The parent's own path through a sync step is kept flat: one broadcast (:meth:`step_all`:
  a ring per worker, then the parent's share stepped in place) and one look that takes
  every answer already there (:meth:`collect`). After the parent has stepped its
  share its caches are cold, and there every layer of Python calls shows: the layered
  path cost ~10 µs more per step than a hand-written loop (84x84x4 images x16: 97 vs
  76 µs a step); the flat one is within ~2 µs of it.
* Every blocking wait has a timeout: the step timeout when one is set, and in any case a
  liveness check of the awaited processes once a second. A worker that dies shows up at
  once as end-of-file on its pipe.

Measured on the 2-core development machine: a step of one worker process hosting one env
that does nothing costs ~22 µs with the bell and ~27 µs without (parent and worker both
counted, the whole ``step`` call included); CartPole-v1 x32 with one worker runs
at 0.97x SyncVectorEnv, i.e. the layer costs ~3% when it cannot gain from parallelism. See
``benchmarks/README.md`` for the full grid.
"""

from __future__ import annotations

import os
import pickle
import select
import time
from collections.abc import Iterable
from typing import Any

from vecpg.errors import WorkerError, WorkerTimeoutError
from workers import protocol
from workers.loop import EnvRunner, failure_frame, handle, start_runner, worker_main
from workers.protocol import Failure, WorkerSpec
from workers.step_bell import FIRST_SLEEP_MS, BellRinger

_LIVENESS_CHECK_S = 1.0
_STEP_ALL_MESSAGE = protocol.frame(protocol.STEP_ALL)
_BELL_MESSAGE = protocol.frame(protocol.BELL)


class LocalWorker:
    """One worker's share of the envs, stepped inside the parent process.

    It answers the same framed commands with the same handler as a worker process, but
    synchronously: its answer is ready as soon as ``send`` returns. The pool sends to it
    last, so the parent steps this share while the worker processes step theirs.
    """

    def __init__(self, spec: WorkerSpec, shared_buffer: Any) -> None:
        self.spec = spec
        self.runner: EnvRunner | None = None
        self.answer: bytes | None = None
        try:
            self.runner = start_runner(spec, shared_buffer)
        except Exception as error:  # noqa: BLE001 - reported like a worker process's failure
            self.answer = failure_frame(spec, None, error)

    def send(self, message: bytes) -> None:
        if self.runner is None:
            return  # construction failed; the failure is the pending answer
        tag, _ = protocol.HEADER.unpack_from(message)
        try:
            self.answer = handle(self.runner, tag, message[protocol.HEADER.size :])
        except Exception as error:  # noqa: BLE001 - KeyboardInterrupt still propagates
            self.answer = failure_frame(self.spec, self.runner, error)

    def take_answer(self) -> tuple[bytes, bytes]:
        answer, self.answer = self.answer, None
        assert answer is not None, "no answer pending from the local worker"
        tag, _ = protocol.HEADER.unpack_from(answer)
        return tag, answer[protocol.HEADER.size :]

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


_START_TIMEOUT_S = 300.0  # building envs can be slow (ROMs, physics models); deaths show at once


class WorkerPool:
    """Worker processes with one pipe each, sharing one memory buffer.

    Args:
        specs: one :class:`~workers.protocol.WorkerSpec` per worker; a last spec with
            ``in_parent=True`` is hosted by a :class:`LocalWorker` in this process.
        context: a ``multiprocessing`` context (its start method is used).
        shared_buffer: the ``RawArray`` every worker maps.
        daemon: start the workers as daemon processes.
        timeout: seconds a step may take before :class:`WorkerTimeoutError`; None waits
            as long as the workers live.
        bell: the parent's end of the workers' step bells, if sync steps ring them (see
            :mod:`workers.step_bell`); None sends every sync step as a message.
    """

    def __init__(
        self,
        specs: list[WorkerSpec],
        context: Any,
        shared_buffer: Any,
        daemon: bool,
        timeout: float | None,
        bell: BellRinger | None = None,
    ) -> None:
        self.specs = specs
        self.timeout = timeout
        self._bell = bell
        self._ring_pending = False  # answers to the last ring may come as shared words
        self.processes: list[Any] = []
        self.connections: list[Any] = []
        self._fds: list[int] = []
        self._poller = select.poll()
        self._worker_of_fd: dict[int, int] = {}
        self._closed = False
        self.local: LocalWorker | None = None
        fork = context.get_start_method() == "fork"
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
                self.local.answer = self.local.answer or protocol.frame(protocol.DONE)
            self.collect(range(len(specs)), timeout=_START_TIMEOUT_S, phase="construct")
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
        except (BrokenPipeError, OSError) as error:
            raise self._death_error(worker, "while sending a command") from error

    def send_all(self, message: bytes) -> None:
        """Send ``message`` to every worker process, then carry it out in the parent's share.

        The parent's share goes last: it is stepped here while the processes step theirs.
        """
        for worker, fd in enumerate(self._fds):
            try:
                protocol.write_message(fd, message)
            except OSError as error:
                raise self._death_error(worker, "while sending a command") from error
        if self.local is not None:
            self.local.send(message)

    def step_all(self) -> None:
        """Start a sync step of every env: ring the bells (or send ``STEP_ALL``), step ours.

        Collect the answers with :meth:`collect`, as for any command.
        """
        if self._bell is None:
            self.send_all(_STEP_ALL_MESSAGE)
            return
        self._ring_pending = True
        for worker in self._bell.ring():  # the ones blocked on their pipe
            try:
                protocol.write_message(self._fds[worker], _BELL_MESSAGE)
            except OSError as error:
                raise self._death_error(worker, "while sending a command") from error
        if self.local is not None:
            self.local.send(_STEP_ALL_MESSAGE)

    def collect(
        self,
        workers: Iterable[int],
        *,
        timeout: float | None = None,
        spin_seconds: float = 0.0,
        phase: str = "step",
    ) -> dict[int, Any]:
        """Wait for one answer from each of ``workers``.

        Returns:
            worker index -> payload (None for a bare "done", else the unpickled payload).

        Raises:
            WorkerError: a worker reported an exception or died.
            WorkerTimeoutError: an answer took longer than the timeout.
        """
        pending = set(workers)
        replies: dict[int, Any] = {}
        local = len(self.processes)
        if local in pending and self.local is not None and self.local.answer is not None:
            replies[local] = self.receive(local)  # answered synchronously: no need to poll
            pending.discard(local)
        limit = self.timeout if timeout is None else timeout
        while pending:
            # Answers that are already there cost one look, without the spin's bookkeeping:
            # the usual case once the parent has stepped its own share.
            for worker in self._ready(pending, 0.0):
                replies[worker] = self.receive(worker)
                pending.discard(worker)
            if pending:
                self.wait_any(pending, timeout=limit, spin_seconds=spin_seconds, phase=phase)
        self._ring_pending = False
        return replies

    def wait_any(
        self,
        workers: set[int],
        *,
        timeout: float | None = None,
        spin_seconds: float = 0.0,
        phase: str = "step",
    ) -> list[int]:
        """Block until at least one of ``workers`` has an answer; return those that do."""
        if spin_seconds > 0:
            deadline = time.perf_counter() + spin_seconds
            while time.perf_counter() < deadline:
                ready = self._ready(workers, 0)
                if ready:
                    return ready
                os.sched_yield()
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        # Blocked, the parent needs the workers' answers to a ring as pipe messages: raise
        # the flag that tells them (workers.step_bell). The first wait is short, in case an
        # answer was stored in its word as the flag went up.
        bell = self._bell if self._ring_pending else None
        sleeper = bell if bell is not None and not bell.parent_blocks else None
        first_wait_s = None if sleeper is None else FIRST_SLEEP_MS / 1000.0
        if sleeper is not None:
            sleeper.set_parent_asleep(True)
        try:
            return self._block_until_ready(workers, limit, started, first_wait_s, phase)
        finally:
            if sleeper is not None:
                sleeper.set_parent_asleep(False)

    def _block_until_ready(
        self,
        workers: set[int],
        limit: float | None,
        started: float,
        first_wait_s: float | None,
        phase: str,
    ) -> list[int]:
        while True:
            wait_s = _LIVENESS_CHECK_S if first_wait_s is None else first_wait_s
            first_wait_s = None
            if limit is not None:
                wait_s = min(wait_s, max(0.0, limit - (time.monotonic() - started)))
            ready = self._ready(workers, wait_s)
            if ready:
                return ready
            for worker in workers:
                if worker < len(self.processes) and not self.processes[worker].is_alive():
                    raise self._death_error(worker, f"during {phase}")
            if limit is not None and time.monotonic() - started >= limit:
                waiting = sorted(workers)
                raise WorkerTimeoutError(
                    f"workers {waiting} did not finish {phase} within {limit:g} s "
                    "(a hung env?); raise step_timeout if the env is just slow",
                    worker_index=waiting[0],
                )

    def _ready(self, workers: set[int], timeout_s: float) -> list[int]:
        """Those of ``workers`` with an answer: local, in a shared word, or in a pipe."""
        ready = []
        local = len(self.processes)
        if local in workers and self.local is not None and self.local.answer is not None:
            ready.append(local)
        if self._ring_pending:
            assert self._bell is not None
            answered = self._bell.answered
            ready += [worker for worker in workers if worker < local and answered(worker)]
        events = self._poller.poll(0.0 if ready else timeout_s * 1000.0)
        for fd, _ in events:
            worker = self._worker_of_fd[fd]
            if worker in workers and worker not in ready:
                ready.append(worker)
        return ready

    def receive(self, worker: int) -> Any:
        """Read one answer from ``worker`` (which must have one); raise its failure."""
        if self._ring_pending and worker < len(self.processes):
            assert self._bell is not None
            if self._bell.answered(worker):
                return None  # a bare "done" through the shared word
        if worker == len(self.processes):
            assert self.local is not None
            tag, payload = self.local.take_answer()
        else:
            try:
                tag, payload = protocol.read_message(self._fds[worker])
            except (EOFError, OSError) as error:
                raise self._death_error(worker, "before answering") from error
        if tag == protocol.DONE:
            return None
        if tag == protocol.DONE_WITH_PAYLOAD:
            return pickle.loads(payload)
        if tag == protocol.FAILED:
            raise self._failure_error(pickle.loads(payload))
        raise WorkerError(
            f"worker {worker} sent an unknown message tag {tag!r}", worker_index=worker
        )

    def _failure_error(self, failure: Failure) -> WorkerError:
        in_parent = ", in the parent process" if failure.worker_index == len(self.processes) else ""
        where = f"env {failure.env_index} (worker {failure.worker_index}{in_parent})"
        if failure.env_index is None:
            where = f"worker {failure.worker_index}"
        return WorkerError(
            f"{failure.exception_type} in {where} during {failure.phase}: {failure.message}",
            worker_index=failure.worker_index,
            env_index=failure.env_index,
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
        return WorkerError(
            f"worker {worker} ({self._envs_of(worker)}) {how} {when}", worker_index=worker
        )

    def _envs_of(self, worker: int) -> str:
        """``"envs 4..7"`` (or ``"env 4"``): the global env indices ``worker`` hosts."""
        start = self.specs[worker].env_start
        if worker + 1 < len(self.specs):
            stop = self.specs[worker + 1].env_start
        else:  # the last share: count its env factories (an error path, so the cost is fine)
            stop = start + len(pickle.loads(self.specs[worker].env_fns))
        return f"env {start}" if stop - start == 1 else f"envs {start}..{stop - 1}"

    def close(self, timeout: float = 5.0) -> None:
        """Ask workers to exit, then terminate and kill stragglers; reap every process.

        Idempotent. ``timeout`` bounds the polite phase; terminate and kill follow.
        """
        if self._closed:
            return
        self._closed = True
        for connection, process in zip(self.connections, self.processes, strict=False):
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
