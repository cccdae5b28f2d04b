"""Atari sampling benchmark: env-steps/s of vecpg's backends against Gymnasium and EnvPool.

    python benchmarks/atari.py                                   # Pong and Breakout, 8/16/32 envs
    python benchmarks/atari.py --games pong --num-envs 16 --rounds 7
    python benchmarks/atari.py --out benchmarks/results/atari.json

Every backend runs the same DeepMind preprocessing (no-op starts, frame skip 4 with max
pooling, 84x84 grayscale, 4-frame stack, life loss as episode end, clipped rewards,
no sticky actions):

- ``vecpg``: :class:`vecpg.vector.env.SubprocVectorEnv` of :func:`vecpg.atari.make_env`,
  configured as ``vecpg train --vector subproc`` configures it (SAME_STEP autoreset, no
  infos, views into shared memory);
- ``native``: ``vecpg train --vector native`` (``ale_py.AtariVectorEnv`` through
  :mod:`vecpg.vector.native`);
- ``ale``: bare ``ale_py.AtariVectorEnv`` with the same options (the adapter's cost is
  the difference to ``native``);
- ``sync`` / ``async``: Gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` of the same
  :func:`vecpg.atari.make_env` (``async``: shared memory, Gymnasium's defaults);
- ``envpool`` / ``envpool-async``: EnvPool's own Atari envs (bench extra), stepped
  synchronously, or with ``send``/``recv`` over half the envs at a time.

A round runs every backend once per point, in a rotated order (so none always follows the
same one); a point's rate is the median over rounds. Ratios are of medians measured in the
same run. Actions are random, drawn before the clock starts. Worker counts are each
backend's default, which scales with the usable cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from vecpg.atari import make_env

BACKENDS = ("vecpg", "native", "ale", "sync", "async", "envpool", "envpool-async")
GAMES = {"pong": ("ALE/Pong-v5", "Pong-v5", 6), "breakout": ("ALE/Breakout-v5", "Breakout-v5", 4)}


class _Backend:
    """``step(actions)`` and ``close()`` over one backend's API for ``num_envs`` envs."""

    def __init__(self, name: str, game: str, num_envs: int, seed: int) -> None:
        ale_id, envpool_id, _ = GAMES[game]
        self.name = name
        self.num_envs = num_envs
        factory = functools.partial(make_env, ale_id)
        same_step = gym.vector.AutoresetMode.SAME_STEP
        self.env: Any
        if name == "vecpg":
            from vecpg.vector.env import SubprocVectorEnv

            self.env = SubprocVectorEnv(
                [factory] * num_envs, autoreset_mode=same_step, infos="none", copy=False
            )
        elif name in ("native", "ale"):
            from vecpg.vector.native import make_native_vector_env

            self.env = make_native_vector_env(ale_id, num_envs)
            if name == "ale":
                self.env = self.env.env  # the bare AtariVectorEnv, without the adapter
        elif name == "sync":
            self.env = gym.vector.SyncVectorEnv([factory] * num_envs, autoreset_mode=same_step)
        elif name == "async":
            self.env = gym.vector.AsyncVectorEnv([factory] * num_envs, autoreset_mode=same_step)
        elif name in ("envpool", "envpool-async"):
            import envpool

            batch = num_envs // 2 if name == "envpool-async" else num_envs
            self.env = envpool.make_gymnasium(
                envpool_id,
                num_envs=num_envs,
                batch_size=batch,
                seed=seed,
                episodic_life=True,
                reward_clip=True,
                noop_max=30,
                repeat_action_probability=0.0,
            )
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        if name == "envpool-async":
            self.env.async_reset()
            self._env_ids = self.env.recv()[-1]["env_id"]
        else:
            self.env.reset(seed=seed)

    def step(self, actions: np.ndarray) -> int:
        """One step; returns the env-steps it took."""
        if self.name == "envpool-async":
            self.env.send(actions[: len(self._env_ids)], self._env_ids)
            self._env_ids = self.env.recv()[-1]["env_id"]
            return len(self._env_ids)
        self.env.step(actions)
        return self.num_envs

    def close(self) -> None:
        self.env.close()


def unavailable_reason(name: str) -> str | None:
    import importlib.util

    module = {"envpool": "envpool", "envpool-async": "envpool"}.get(name)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'vecpg[bench]')"
    return None


def run_once(
    name: str, game: str, num_envs: int, *, seconds: float, warmup_seconds: float, seed: int
) -> float:
    """Env-steps per second of one backend over a timed window after a warmup."""
    rng = np.random.default_rng(seed)
    actions = [rng.integers(GAMES[game][2], size=num_envs) for _ in range(64)]
    backend = _Backend(name, game, num_envs, seed)
    try:
        for phase_seconds, timed in ((warmup_seconds, False), (seconds, True)):
            steps, start = 0, time.perf_counter()
            index = 0
            while time.perf_counter() - start < phase_seconds or index < 2:
                steps += backend.step(actions[index % len(actions)])
                index += 1
            if timed:
                return steps / (time.perf_counter() - start)
    finally:
        backend.close()
    raise AssertionError("unreachable")


def run(
    games: list[str],
    num_envs: list[int],
    backends: list[str],
    *,
    rounds: int,
    seconds: float,
    warmup_seconds: float,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every (game, num_envs, backend) point; the JSON-able report."""
    log = log or functools.partial(print, flush=True)
    points: list[dict[str, Any]] = []
    for game in games:
        for count in num_envs:
            available = [name for name in backends if unavailable_reason(name) is None]
            rates: dict[str, list[float]] = {name: [] for name in available}
            for round_index in range(rounds):
                shift = round_index % len(available)
                for name in available[shift:] + available[:shift]:
                    rate = run_once(
                        name,
                        game,
                        count,
                        seconds=seconds,
                        warmup_seconds=warmup_seconds,
                        seed=seed + round_index,
                    )
                    rates[name].append(rate)
                    log(f"  {game} x{count} round {round_index + 1}: {name} {rate:,.0f}")
            medians = {name: statistics.median(values) for name, values in rates.items()}
            for name in backends:
                point: dict[str, Any] = {"game": game, "num_envs": count, "backend": name}
                if name in medians:
                    point.update(steps_per_second=medians[name], runs=rates[name])
                else:
                    point["skipped"] = unavailable_reason(name)
                points.append(point)
            log(_group_text(game, count, medians))
    return {
        "settings": {
            "games": games,
            "num_envs": num_envs,
            "backends": backends,
            "rounds": rounds,
            "seconds": seconds,
            "warmup_seconds": warmup_seconds,
            "seed": seed,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "points": points,
        "targets": targets(points),
    }


def _group_text(game: str, num_envs: int, medians: dict[str, float]) -> str:
    parts = [f"{name} {rate:,.0f}" for name, rate in medians.items()]
    return f"{game} x{num_envs}: " + ", ".join(parts) + " env-steps/s (medians)"


def targets(points: list[dict[str, Any]], default_backend: str = "native") -> list[dict[str, Any]]:
    """The two sampling targets at Pong x16, from medians of the same run."""
    rate = {
        point["backend"]: point.get("steps_per_second")
        for point in points
        if point["game"] == "pong" and point["num_envs"] == 16
    }
    results = []
    if rate.get("vecpg") and rate.get("async"):
        ratio = rate["vecpg"] / rate["async"]
        results.append(
            {"target": "vecpg subproc >= 1.4x Gymnasium Async (Pong x16)", "ratio": ratio}
        )
    peers = [rate.get(name) for name in ("ale", "envpool", "envpool-async") if rate.get(name)]
    if rate.get(default_backend) and peers:
        ratio = rate[default_backend] / max(peers)  # type: ignore[type-var]
        results.append(
            {
                "target": f"default Atari backend ({default_backend}) >= 0.9x the faster of "
                "EnvPool and AtariVectorEnv (Pong x16)",
                "ratio": ratio,
            }
        )
    for result, bound in zip(results, (1.4, 0.9), strict=False):
        result["pass"] = result["ratio"] >= bound
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--num-envs", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per point")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per run")
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run(
        args.games,
        args.num_envs,
        args.backends,
        rounds=args.rounds,
        seconds=args.seconds,
        warmup_seconds=args.warmup_seconds,
        seed=args.seed,
    )
    for result in report["targets"]:
        verdict = "PASS" if result["pass"] else "FAIL"
        print(f"{verdict} {result['target']}: {result['ratio']:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
