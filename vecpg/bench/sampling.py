"""Sampling benchmark: env-steps per second of vecpg's vector env against its peers.

A *point* is one (workload, number of envs N, vectorizer) triple. Each run of a point builds
the vector env, resets it, steps it once (construction time = until that first step
returns), steps it for a warmup, then steps it with pre-sampled random actions for a timed
window; the point's rate is the median over ``repeats`` runs. Runs are interleaved across
vectorizers (run 1 of every vectorizer, then run 2, ...), so a burst of load from other
processes on the machine hits all of them instead of one; each round starts one vectorizer later
than the one before, so that none always runs right after the same other one (e.g. after
AsyncVectorEnv, whose many workers are just gone). ``ideal`` is the rate of one bare
env in this process times the usable cores: what perfect parallelism would give.
``parallel_capacity`` is what the machine gives at the moment: bare envs stepped by one
process per core at once, against one process (a shared VM often gives far less than the
core count, and then so does every multi-process vectorizer).

Workloads: ``cartpole`` (CartPole-v1, a few microseconds a step), ``busy`` (:class:`vecpg.bench.envs.BusyEnv`,
``step_cost_us`` of CPU work; the loop's iteration count is calibrated once here and passed
to every env so that every vectorizer does identical work) and ``image``
(:class:`vecpg.bench.envs.ImageEnv`, 84x84x4 uint8 observations).

Vectorizers: ``vecpg`` (``SubprocVectorEnv`` with a given ``num_workers``/``wait``; None
means vecpg's default), ``sync``/``async`` (Gymnasium), and, when installed, ``sb3``
(Stable-Baselines3 ``SubprocVecEnv``), ``sb3-dummy`` (its ``DummyVecEnv``), ``vecpg-sb3``
(:class:`vecpg.sb3.SubprocVecEnv`, vecpg's defaults behind SB3's API, compared with the two
SB3 classes), ``envpool`` (CartPole only) and ``pufferlib``. Peers that are missing are
recorded as skipped with the reason.

This module imports no torch: it must not perturb the workers it measures (SB3, which
imports torch, is imported only when its point runs, after vecpg's memory check).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from vecpg.bench import envs as synthetic
from vecpg.vector.worker_defaults import usable_cores

WORKLOADS = ("cartpole", "busy", "image")
PEERS = ("sync", "async", "sb3", "sb3-dummy", "vecpg-sb3", "envpool", "pufferlib")
# Every point gets its rate relative to these peers' (ratio_vs_sync, ratio_vs_sb3_dummy ...).
RATIO_PEERS = ("sync", "async", "sb3", "sb3-dummy")
WAIT_MODES = ("auto", "block", "spin")
_DISTRIBUTIONS = {  # import name -> distribution name, for the versions in the report
    "numpy": "numpy",
    "gymnasium": "gymnasium",
    "vecpg": "vecpg",
    "psutil": "psutil",
    "stable_baselines3": "stable-baselines3",
    "envpool": "envpool",
    "pufferlib": "pufferlib",
    "torch": "torch",
}


@dataclass(frozen=True)
class Workload:
    """A benchmark env: ``make_env()`` builds one (picklable, for worker processes)."""

    name: str
    description: str
    make_env: Callable[[], gymnasium.Env]
    gym_id: str | None = None  # for peers that build their own envs (EnvPool)


def make_workload(name: str, *, step_cost_us: float = 100.0) -> Workload:
    """The workload called ``name`` (one of :data:`WORKLOADS`).

    Example:
        >>> workload = make_workload("image")
        >>> workload.make_env().observation_space.shape
        (84, 84, 4)
    """
    if name == "cartpole":
        return Workload(
            name, "CartPole-v1", functools.partial(gymnasium.make, "CartPole-v1"), "CartPole-v1"
        )
    if name == "busy":
        iterations = synthetic.busy_iterations(step_cost_us)
        make_env = functools.partial(synthetic.BusyEnv, step_cost_us, iterations=iterations)
        return Workload(name, f"BusyEnv {step_cost_us:g} µs ({iterations} iterations)", make_env)
    if name == "image":
        return Workload(
            name, "ImageEnv 84x84x4 uint8", functools.partial(synthetic.ImageEnv, (84, 84, 4))
        )
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


_MODULES = {  # vectorizer kind -> module it needs
    "vecpg": "vecpg.vector.env",
    "sb3": "stable_baselines3.common.vec_env",
    "sb3-dummy": "stable_baselines3.common.vec_env",
    "vecpg-sb3": "vecpg.vector.sb3",
    "envpool": "envpool",
    "pufferlib": "pufferlib.vector",
}


@dataclass(frozen=True)
class Vectorizer:
    """A vectorizer and its settings; ``None`` settings mean the vectorizer's own default."""

    kind: str
    num_workers: int | None = None
    wait: str | None = None

    @property
    def label(self) -> str:
        if self.kind != "vecpg":
            return self.kind
        workers = "default" if self.num_workers is None else self.num_workers
        return f"vecpg(w={workers},wait={self.wait or 'default'})"

    @property
    def is_vecpg_default(self) -> bool:
        return self.kind == "vecpg" and self.num_workers is None and self.wait is None


def unavailable_reason(vectorizer: Vectorizer, workload: Workload, num_envs: int) -> str | None:
    """Why this point cannot run here (a missing package, an unsupported workload), or None."""
    module = {
        "vecpg": "vecpg.vector.env",
        "sb3": "stable_baselines3",
        "sb3-dummy": "stable_baselines3",
        "vecpg-sb3": "stable_baselines3",
        "envpool": "envpool",
        "pufferlib": "pufferlib.vector",
    }
    name = module.get(vectorizer.kind)
    if name is not None:
        try:
            # Top-level package only for peers: finding a submodule imports its parents,
            # and stable_baselines3 imports torch.
            spec_name = name if vectorizer.kind == "vecpg" else name.partition(".")[0]
            found = importlib.util.find_spec(spec_name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            extra = "" if vectorizer.kind == "vecpg" else " (pip install 'vecpg[bench]')"
            return f"{name} is not installed{extra}"
    if vectorizer.kind == "envpool" and workload.gym_id is None:
        return "EnvPool runs its own C++ envs only; no Python-env workload"
    if vectorizer.kind == "pufferlib":
        return "PufferLib adapter not implemented for this PufferLib version"
    if vectorizer.num_workers is not None and vectorizer.num_workers > num_envs:
        return f"num_workers={vectorizer.num_workers} > num_envs={num_envs}"
    return None


class _Stepper:
    """Uniform step/close over every vectorizer's API; ``step`` returns nothing."""

    def __init__(self, vectorizer: Vectorizer, workload: Workload, num_envs: int, seed: int):
        env_fns = [workload.make_env] * num_envs
        self.env: Any
        self.worker_pids: list[int] = []
        self.resolved: dict[str, Any] = {}
        kind = vectorizer.kind
        if kind == "vecpg":
            from vecpg.vector.env import SubprocVectorEnv

            options: dict[str, Any] = {}
            if vectorizer.num_workers is not None:
                options["num_workers"] = vectorizer.num_workers
            if vectorizer.wait is not None:
                options["wait"] = vectorizer.wait
            self.env = SubprocVectorEnv(env_fns, **options)
            self.env.reset(seed=seed)
            self.worker_pids = list(self.env.worker_pids)
            self.resolved = {
                "num_workers": self.env.num_workers,
                "parent_share": self.env.parent_share,
                "spin_seconds": self.env.spin_seconds,
                "worker_spin_seconds": self.env.worker_spin_seconds,
            }
        elif kind in ("sync", "async"):
            vector_class = (
                gymnasium.vector.SyncVectorEnv
                if kind == "sync"
                else gymnasium.vector.AsyncVectorEnv
            )
            self.env = vector_class(env_fns)
            self.env.reset(seed=seed)
            self.worker_pids = [process.pid for process in getattr(self.env, "processes", [])]
        elif kind == "sb3":
            from stable_baselines3.common.vec_env import SubprocVecEnv

            self.env = SubprocVecEnv(env_fns)
            self.env.seed(seed)
            self.env.reset()
            self.worker_pids = [process.pid for process in self.env.processes]
        elif kind == "sb3-dummy":
            from stable_baselines3.common.vec_env import DummyVecEnv

            self.env = DummyVecEnv(env_fns)
            self.env.seed(seed)
            self.env.reset()
        elif kind == "vecpg-sb3":
            from vecpg.vector.sb3 import SubprocVecEnv as VecpgSubprocVecEnv

            self.env = VecpgSubprocVecEnv(env_fns)
            self.env.seed(seed)
            self.env.reset()
            self.worker_pids = list(self.env.vector_env.worker_pids)
        elif kind == "envpool":
            import envpool

            assert workload.gym_id is not None  # unavailable_reason() skips the others
            self.env = envpool.make_gymnasium(workload.gym_id, num_envs=num_envs, seed=seed)
            self.env.reset()
        else:
            raise ValueError(f"unknown vectorizer {kind!r}")

    def step(self, actions: np.ndarray) -> None:
        self.env.step(actions)

    def close(self) -> None:
        self.env.close()


def presample_actions(workload: Workload, num_envs: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` batches of random actions, [num_envs, *action_shape] each, sampled before timing."""
    env = workload.make_env()
    try:
        space = gymnasium.vector.utils.batch_space(env.action_space, num_envs)
    finally:
        env.close()
    space.seed(seed)
    return [np.asarray(space.sample()) for _ in range(count)]


def _timed_steps(
    step: Callable[[np.ndarray], Any], actions: list[np.ndarray], seconds: float, min_steps: int
) -> tuple[int, float]:
    """Steps until both ``min_steps`` steps and ``seconds`` have passed; returns (steps, elapsed)."""
    steps, start = 0, time.perf_counter()
    elapsed = 0.0
    while steps < min_steps or elapsed < seconds:
        step(actions[steps % len(actions)])
        steps += 1
        elapsed = time.perf_counter() - start
    return steps, elapsed


def run_once(
    vectorizer: Vectorizer,
    workload: Workload,
    num_envs: int,
    actions: list[np.ndarray],
    *,
    seconds: float,
    min_steps: int,
    warmup_seconds: float,
    seed: int,
) -> dict[str, Any]:
    """One run of one point: construction time, then the timed rate in env-steps/s."""
    # Import the vectorizer's package before the clock starts (SB3 imports torch: seconds).
    importlib.import_module(_MODULES.get(vectorizer.kind, "gymnasium"))
    started = time.perf_counter()
    stepper = _Stepper(vectorizer, workload, num_envs, seed)
    try:
        stepper.step(actions[0])
        construction_s = time.perf_counter() - started
        _timed_steps(stepper.step, actions, warmup_seconds, min_steps=1)
        steps, elapsed = _timed_steps(stepper.step, actions, seconds, min_steps)
    finally:
        stepper.close()
    return {
        "steps_per_second": steps * num_envs / elapsed,
        "construction_s": construction_s,
        "vector_steps": steps,
        "elapsed_s": elapsed,
        **stepper.resolved,
    }


def single_env_rate(
    workload: Workload, *, seconds: float, min_steps: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Steps/s of one bare env in this process (resetting at episode ends), median of runs."""
    stepper = _BareEnv(workload.make_env, seed)
    try:
        rates = [stepper.rate(seconds, min_steps) for _ in range(repeats)]
    finally:
        stepper.close()
    return {"steps_per_second": _median(rates), "runs": rates}


class _BareEnv:
    """One env stepped in a plain loop with pre-sampled actions (resetting at episode ends)."""

    def __init__(self, make_env: Callable[[], gymnasium.Env], seed: int) -> None:
        self.env = make_env()
        self.env.action_space.seed(seed)
        self.actions = [self.env.action_space.sample() for _ in range(256)]
        self.env.reset(seed=seed)

    def step(self, action: Any) -> None:
        _, _, terminated, truncated, _ = self.env.step(action)
        if terminated or truncated:
            self.env.reset()

    def rate(self, seconds: float, min_steps: int) -> float:
        steps, elapsed = _timed_steps(self.step, self.actions, seconds, min_steps)
        return steps / elapsed

    def close(self) -> None:
        self.env.close()


def _bare_env_process(make_env: Callable[[], gymnasium.Env], seed: int, connection: Any) -> None:
    """Child of :func:`parallel_capacity`: answers each ``(seconds, min_steps)`` with a rate.

    Errors go back as the exception; ``None`` ends the process.
    """
    try:
        stepper = _BareEnv(make_env, seed)
        connection.send("ready")
        while (request := connection.recv()) is not None:
            connection.send(stepper.rate(*request))
        stepper.close()
    except EOFError:
        pass  # the benchmark process is gone: nobody to answer
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises
        connection.send(error)
    finally:
        connection.close()


def _answers(children: list[Any], connections: list[Any], timeout: float) -> list[Any]:
    """One answer from each child, in order; a failure or a silent child raises RuntimeError."""
    answers = []
    for child, connection in zip(children, connections, strict=True):
        try:
            if not connection.poll(timeout):
                raise RuntimeError(f"bare-env process {child.name} did not answer")
            answer = connection.recv()
        except EOFError:
            child.join(timeout=5.0)
            raise RuntimeError(
                f"bare-env process {child.name} died (exit code {child.exitcode})"
            ) from None
        if isinstance(answer, BaseException):
            raise RuntimeError(f"bare-env process {child.name} failed: {answer!r}")
        answers.append(answer)
    return answers


def parallel_capacity(
    workload: Workload,
    *,
    processes: int,
    seconds: float,
    min_steps: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """How much parallel speed-up this machine gives right now, without any vectorizer.

    ``processes`` processes each step one bare env in a plain loop at the same time; their
    summed rate is divided by that of one of them stepping alone (``repeats`` times one
    alone then all together; medians). On a quiet machine with ``processes`` free cores this is close to
    ``processes``; on a shared VM it can be far less, and no vectorizer can beat it.
    Compare multi-process ratios (e.g. BusyEnv against SyncVectorEnv) with it.

    The processes are started once with ``spawn``: not through the fork server, whose
    imports vecpg's workers share (see :mod:`vecpg.vector.env`), nor forked from a benchmark
    process that may have imported torch for a peer.

    Returns:
        ``{"processes", "speedup", "one_process_runs", "all_processes_runs"}`` (steps/s).
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    context = multiprocessing.get_context("spawn")
    timeout = max(120.0, 20 * seconds)  # a spawn start imports gymnasium and numpy
    children, connections = [], []
    try:
        for k in range(processes):
            parent_end, child_end = context.Pipe()
            child = context.Process(
                target=_bare_env_process,
                args=(workload.make_env, seed + k, child_end),
                name=f"vecpg-bench-bare-{k}",
                daemon=True,
            )
            child.start()
            child_end.close()
            children.append(child)
            connections.append(parent_end)
        _answers(children, connections, timeout)  # every env is built
        one, all_together = [], []
        for _ in range(repeats):
            connections[0].send((seconds, min_steps))
            one.extend(_answers(children[:1], connections[:1], timeout))
            for connection in connections:
                connection.send((seconds, min_steps))
            all_together.append(sum(_answers(children, connections, timeout)))
    finally:
        for connection in connections:
            try:
                connection.send(None)
            except OSError:
                pass  # that child is gone already
        for child in children:
            child.join(timeout=5.0)
            if child.is_alive():
                child.kill()
                child.join()
        for connection in connections:
            connection.close()
    return {
        "processes": processes,
        "speedup": _median(all_together) / _median(one),
        "one_process_runs": one,
        "all_processes_runs": all_together,
    }


def _capacity_text(capacity: dict[str, Any]) -> str:
    return (
        f"{capacity['processes']} bare-env processes at once: {capacity['speedup']:.2f}x one "
        "(the parallelism this machine gives now)"
    )


def _median(values) -> float:
    return float(np.median(list(values)))


def machine_info() -> dict[str, Any]:
    """Cores, platform and package versions (read from metadata: nothing heavy is imported)."""
    import platform
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for module, distribution in _DISTRIBUTIONS.items():
        try:
            versions[module] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[module] = None
    try:
        load_average = list(os.getloadavg())
    except OSError:
        load_average = None
    return {
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_at_start": load_average,
        "versions": versions,
    }


def _with_ratios(points: list[dict[str, Any]], ideal: float | None) -> None:
    """Adds ``ratio_vs_<peer>`` (:data:`RATIO_PEERS`, ``-`` as ``_``) and fraction_of_ideal
    to the points of one group."""
    rates = {point["vectorizer"]: point.get("steps_per_second") for point in points}
    for point in points:
        rate = point.get("steps_per_second")
        for peer in RATIO_PEERS:
            reference = rates.get(peer)
            ratio = rate / reference if rate and reference else None
            point[f"ratio_vs_{peer.replace('-', '_')}"] = ratio
        point["fraction_of_ideal"] = rate / ideal if rate and ideal else None


def run_grid(
    *,
    workloads: Sequence[str] = ("cartpole",),
    num_envs: Sequence[int] | Mapping[str, Sequence[int]] = (32,),
    num_workers: Sequence[int | None] = (None,),
    waits: Sequence[str | None] = (None,),
    peers: Sequence[str] = ("sync", "async"),
    repeats: int = 3,
    seconds: float = 1.0,
    warmup_seconds: float = 0.2,
    min_steps: int = 10,
    step_cost_us: float = 100.0,
    seed: int = 0,
    checks: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Measures every point of the grid; returns the JSON-able report (see the module docstring).

    ``num_workers``/``waits`` entries of None mean vecpg's default for that setting. With
    ``checks``, each workload's :func:`parallel_capacity` is measured (on more than one
    core), and with the cartpole workload vecpg's worker memory and cold start too (see
    :func:`measure_worker_memory`, :func:`measure_cold_start`).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for peer in peers:
        if peer not in PEERS:
            raise ValueError(f"peer must be one of {PEERS}, got {peer!r}")
    for wait in waits:
        if wait is not None and wait not in WAIT_MODES:
            raise ValueError(f"wait must be one of {WAIT_MODES} or None, got {wait!r}")
    envs_of = {
        name: list(num_envs[name] if isinstance(num_envs, Mapping) else num_envs)
        for name in workloads
    }
    vectorizers = [Vectorizer("vecpg", workers, wait) for workers in num_workers for wait in waits]
    vectorizers += [Vectorizer(peer) for peer in peers]
    log = log or (lambda message: None)
    cores = usable_cores()
    report: dict[str, Any] = {
        "settings": {
            "workloads": list(workloads),
            "num_envs": envs_of,
            "num_workers": list(num_workers),
            "waits": list(waits),
            "peers": list(peers),
            "repeats": repeats,
            "seconds": seconds,
            "warmup_seconds": warmup_seconds,
            "min_steps": min_steps,
            "step_cost_us": step_cost_us,
            "seed": seed,
        },
        "machine": machine_info(),
        "workloads": {},
        "points": [],
        "memory": None,
        "cold_start": None,
    }
    for workload_name in workloads:
        workload = make_workload(workload_name, step_cost_us=step_cost_us)
        single = single_env_rate(
            workload, seconds=seconds / 2, min_steps=min_steps, repeats=repeats, seed=seed
        )
        ideal = single["steps_per_second"] * cores
        capacity = None
        if checks and cores > 1:
            capacity = parallel_capacity(
                workload,
                processes=cores,
                seconds=seconds / 2,
                min_steps=min_steps,
                repeats=repeats,
                seed=seed,
            )
        report["workloads"][workload_name] = {
            "description": workload.description,
            "single_env_steps_per_second": single["steps_per_second"],
            "single_env_runs": single["runs"],
            "ideal_steps_per_second": ideal,
            "parallel_capacity": capacity,
        }
        log(
            f"{workload.description}: one env {single['steps_per_second']:,.0f} steps/s, ideal {ideal:,.0f}"
            + ("" if capacity is None else f"; {_capacity_text(capacity)}")
        )
        if checks and workload_name == "cartpole":
            # Before any SB3 point: its import brings torch into this process.
            check_envs = 32 if 32 in envs_of[workload_name] else max(envs_of[workload_name])
            report["memory"] = _memory_check_or_reason(workload, check_envs, seed)
            report["cold_start"] = measure_cold_start("cartpole", check_envs)
        for count in envs_of[workload_name]:
            group = _run_group(
                workload, count, vectorizers, repeats, seconds, warmup_seconds, min_steps, seed, log
            )
            _with_ratios(group, ideal)
            report["points"].extend(group)
    return report


def _run_group(
    workload, num_envs, vectorizers, repeats, seconds, warmup_seconds, min_steps, seed, log
):
    points = []
    for vectorizer in vectorizers:
        reason = unavailable_reason(vectorizer, workload, num_envs)
        points.append(
            {
                "workload": workload.name,
                "num_envs": num_envs,
                "vectorizer": vectorizer.label,
                "kind": vectorizer.kind,
                "num_workers": vectorizer.num_workers,
                "wait": vectorizer.wait,
                "is_vecpg_default": vectorizer.is_vecpg_default,
                "status": "skipped" if reason else "ok",
                "reason": reason,
                "runs": [],
            }
        )
    actions = presample_actions(workload, num_envs, count=256, seed=seed)
    order = list(zip(vectorizers, points, strict=True))
    for repeat in range(repeats):  # interleaved and rotated: see the module docstring
        shift = repeat % len(order)
        for vectorizer, point in order[shift:] + order[:shift]:
            if point["status"] != "ok":
                continue
            try:
                run = run_once(
                    vectorizer, workload, num_envs, actions,
                    seconds=seconds, min_steps=min_steps, warmup_seconds=warmup_seconds, seed=seed + repeat,
                )  # fmt: skip
            except Exception as error:  # a broken vectorizer must not end the whole benchmark
                point.update(status="error", reason=f"{type(error).__name__}: {error}")
                log(f"  {workload.name} x{num_envs} {vectorizer.label}: ERROR {point['reason']}")
                continue
            point["runs"].append(run)
    for point in points:
        runs = point["runs"]
        if point["status"] == "ok" and runs:
            point["steps_per_second"] = _median(run["steps_per_second"] for run in runs)
            point["construction_s"] = _median(run["construction_s"] for run in runs)
            if "num_workers" in runs[0]:
                point["resolved_num_workers"] = runs[0]["num_workers"]
                # What vecpg made of the settings: points that resolve alike are one layout.
                point["resolved_layout"] = [
                    runs[0]["num_workers"],
                    runs[0]["parent_share"],
                    runs[0]["spin_seconds"],
                    runs[0]["worker_spin_seconds"],
                ]
        if point["status"] == "skipped":
            log(f"  {workload.name} x{num_envs} {point['vectorizer']}: skipped ({point['reason']})")
    return points


# --- worker memory ------------------------------------------------------------------------------


def _reference_process(env_fns: list[Callable[[], gymnasium.Env]], connection: Any) -> None:
    """A bare process with the same envs a worker hosts: the baseline for worker memory.

    It is measured from outside, like the workers (reading one's own smaps allocates).
    """
    created = [env_fn() for env_fn in env_fns]
    for index, env in enumerate(created):
        env.reset(seed=index)
        for _ in range(10):
            env.step(env.action_space.sample())
    connection.send("ready")
    connection.recv()  # until the parent has measured this process
    for env in created:
        env.close()


def _torch_mapped(pid: int) -> bool:
    """Whether torch's shared libraries are mapped into process ``pid`` (imported there)."""
    import psutil

    return any(
        "torch" in os.path.basename(os.path.dirname(m.path)) or "libtorch" in m.path
        for m in psutil.Process(pid).memory_maps()
    )


def _memory_check_or_reason(workload: Workload, num_envs: int, seed: int) -> dict[str, Any]:
    reason = unavailable_reason(Vectorizer("vecpg"), workload, num_envs)
    if reason:
        return {"status": "skipped", "reason": reason}
    try:
        return measure_worker_memory(workload, num_envs, seed=seed)
    except Exception as error:
        return {"status": "error", "reason": f"{type(error).__name__}: {error}"}


def measure_worker_memory(workload: Workload, num_envs: int, *, seed: int = 0) -> dict[str, Any]:
    """Private memory (USS) of vecpg's default workers against a bare process with the same envs.

    Both are started the same way (vecpg's start method) so copy-on-write sharing matches;
    ``overhead_mb`` is the largest worker's USS minus the baseline's.
    """
    import psutil

    from vecpg.vector.env import SubprocVectorEnv

    env = SubprocVectorEnv([workload.make_env] * num_envs)
    try:
        env.reset(seed=seed)
        actions = presample_actions(workload, num_envs, count=16, seed=seed)
        for batch in actions:
            env.step(batch)
        pids = list(env.worker_pids)
        worker_uss = [psutil.Process(pid).memory_full_info().uss for pid in pids]
        torch_in_workers = [_torch_mapped(pid) for pid in pids]
        context_name = getattr(env, "start_method", None) or "forkserver"
    finally:
        env.close()
    envs_per_worker = math.ceil(num_envs / len(pids))
    context: Any = multiprocessing.get_context(context_name)
    parent_end, child_end = context.Pipe()
    process = context.Process(
        target=_reference_process, args=([workload.make_env] * envs_per_worker, child_end)
    )
    process.start()
    child_end.close()
    try:
        if not parent_end.poll(60):
            raise TimeoutError("the reference process did not start its envs within 60 s")
        parent_end.recv()
        baseline_uss = psutil.Process(process.pid).memory_full_info().uss
        parent_end.send("done")
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        parent_end.close()
    megabyte = 2**20
    return {
        "status": "ok",
        "num_envs": num_envs,
        "num_workers": len(pids),
        "start_method": context_name,
        "worker_uss_mb": [uss / megabyte for uss in worker_uss],
        "baseline_uss_mb": baseline_uss / megabyte,
        "overhead_mb": (max(worker_uss) - baseline_uss) / megabyte,
        "torch_in_workers": any(torch_in_workers),
    }


_COLD_START_CODE = """
import sys, time
from vecpg.bench.sampling import make_workload, presample_actions
from vecpg.vector.env import SubprocVectorEnv
workload, num_envs = make_workload(sys.argv[1]), int(sys.argv[2])
actions = presample_actions(workload, num_envs, count=1, seed=0)
started = time.perf_counter()
env = SubprocVectorEnv([workload.make_env] * num_envs)
env.reset(seed=0)
env.step(actions[0])
print(time.perf_counter() - started, env.num_workers)
env.close()
"""


def measure_cold_start(
    workload_name: str, num_envs: int, *, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Seconds from ``SubprocVectorEnv(...)`` to its first step's return in a fresh interpreter.

    Unlike the grid's construction times (whose fork server is already running), this
    includes starting the fork server and the workers' imports: what a user waits for.
    """
    import subprocess

    reason = unavailable_reason(Vectorizer("vecpg"), make_workload(workload_name), num_envs)
    if reason:
        return {"status": "skipped", "reason": reason}
    result = subprocess.run(
        [sys.executable, "-c", _COLD_START_CODE, workload_name, str(num_envs)],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    if result.returncode != 0:
        return {"status": "error", "reason": result.stderr.strip().splitlines()[-1:]}
    seconds, num_workers = result.stdout.split()[-2:]
    return {
        "status": "ok",
        "workload": workload_name,
        "num_envs": num_envs,
        "num_workers": int(num_workers),
        "seconds": float(seconds),
    }


# --- presentation -------------------------------------------------------------------------------


def _format(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table, one block per (workload, num_envs)."""
    header = f"{'workload':<9} {'envs':>4}  {'vectorizer':<32} {'steps/s':>11} {'x sync':>7} {'x async':>8} {'% ideal':>8} {'start s':>8}"
    lines = [header, "-" * len(header)]
    previous_group = None
    for point in report["points"]:
        group = (point["workload"], point["num_envs"])
        if previous_group is not None and group != previous_group:
            lines.append("")
        previous_group = group
        label = point["vectorizer"]
        if point.get("resolved_num_workers") is not None and point["num_workers"] is None:
            label = label.replace("w=default", f"w=default:{point['resolved_num_workers']}")
        if point["status"] != "ok" or "steps_per_second" not in point:
            lines.append(
                f"{point['workload']:<9} {point['num_envs']:>4}  {label:<32} {point['status']}: {point['reason']}"
            )
            continue
        ideal = point["fraction_of_ideal"]
        lines.append(
            f"{point['workload']:<9} {point['num_envs']:>4}  {label:<32} "
            f"{point['steps_per_second']:>11,.0f} {_format(point['ratio_vs_sync'], '>7.2f')} "
            f"{_format(point['ratio_vs_async'], '>8.2f')} {_format(None if ideal is None else 100 * ideal, '>8.1f')} "
            f"{point['construction_s']:>8.2f}"
        )
    memory = report.get("memory")
    if memory and memory.get("status") == "ok":
        lines.append("")
        lines.append(
            f"worker memory (cartpole x{memory['num_envs']}, {memory['num_workers']} workers): USS "
            f"{', '.join(f'{value:.1f}' for value in memory['worker_uss_mb'])} MB, baseline "
            f"{memory['baseline_uss_mb']:.1f} MB, overhead {memory['overhead_mb']:.1f} MB, "
            f"torch in workers: {memory['torch_in_workers']}"
        )
    elif memory:
        lines.append(f"worker memory: {memory['status']} ({memory['reason']})")
    for name, workload in report.get("workloads", {}).items():
        if workload.get("parallel_capacity"):
            lines.append(
                f"parallel capacity ({name}): {_capacity_text(workload['parallel_capacity'])}"
            )
    cold = report.get("cold_start")
    if cold and cold.get("status") == "ok":
        lines.append(
            f"cold start (fresh interpreter, {cold['workload']} x{cold['num_envs']}, "
            f"{cold['num_workers']} workers): {cold['seconds']:.2f} s to the first step"
        )
    elif cold:
        lines.append(f"cold start: {cold['status']} ({cold['reason']})")
    return "\n".join(lines)
