"""Distributed sampling benchmark: env steps/s against the number of Ray samplers.

    python benchmarks/distributed.py                        # K = 1, 2 on a local Ray
    python benchmarks/distributed.py --samplers 1 2 4 --num-envs 64 --updates 20
    python benchmarks/distributed.py --ray-address auto     # on a running cluster

For every K it builds a :class:`vecpg.distributed.RaySampler` (K actors, N envs in all,
``sampler_cpus`` each) and times ``--updates`` rollouts of ``[T, N]`` after a warm-up,
splitting each into the weight broadcast (one ``ray.put`` of the policy), the sampling
(submit until every segment is ready) and the gather (fetching the K segments and copying
them into the learner's ``[T, N]`` buffer). It also times the single-machine
:class:`vecpg.sampler.Sampler` on the same N envs and one PPO update on the buffer, so the
table shows where the time goes. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from vecpg.buffer import RolloutBuffer
from vecpg.distributed import RaySampler, import_ray
from vecpg.learners import make_learner
from vecpg.policies import ActorCritic
from vecpg.run.config import resolve_config
from vecpg.run.env_factory import env_spaces, make_vector_env
from vecpg.sampler import Sampler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium env id")
    parser.add_argument("--num-envs", type=int, default=32, help="envs N in all")
    parser.add_argument("--num-steps", type=int, default=64, help="rollout length T")
    parser.add_argument(
        "--samplers", type=int, nargs="+", default=[1, 2], help="numbers of samplers K to time"
    )
    parser.add_argument("--sampler-cpus", type=float, default=1.0, help="CPUs per sampler")
    parser.add_argument(
        "--workers-per-sampler", type=int, default=1, help="env worker processes per sampler"
    )
    parser.add_argument("--updates", type=int, default=10, help="timed rollouts per point")
    parser.add_argument("--ray-address", default=None, help="Ray address (default: local)")
    parser.add_argument(
        "--out",
        default="benchmarks/results/distributed.json",
        help="JSON output path",
    )
    return parser


def _config(args: argparse.Namespace, samplers: int) -> Any:
    return resolve_config(
        cli_values={
            "env": args.env,
            "num_envs": args.num_envs,
            "num_steps": args.num_steps,
            "num_workers": args.workers_per_sampler,
            "backend": "ray",
            "num_samplers": samplers,
            "sampler_cpus": args.sampler_cpus,
            "device": "cpu",
        }
    )


def _policy_buffer(config: Any) -> tuple[ActorCritic, RolloutBuffer]:
    torch.manual_seed(0)
    observation_space, action_space = env_spaces(config.env)
    policy = ActorCritic(observation_space, action_space)
    buffer = RolloutBuffer(observation_space, action_space, config.num_steps, config.num_envs)
    return policy, buffer


def _bytes(tensors: Any) -> int:
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getbuffer().nbytes


def time_local(args: argparse.Namespace) -> dict[str, Any]:
    """The single-machine Sampler on N envs, and one PPO update on its buffer."""
    config = resolve_config(cli_values={**_config(args, 1).to_dict(), "backend": "local"})
    config.num_workers = None  # the vector env's own choice for N envs on this machine
    env = make_vector_env(config)
    try:
        policy, buffer = _policy_buffer(config)
        sampler = Sampler(env, policy, buffer)
        learner = make_learner(policy, config)
        sampler.reset(seed=0)
        sampler.collect()
        collect_s, update_s = [], []
        for _ in range(args.updates):
            started = time.perf_counter()
            sampler.collect()
            collected = time.perf_counter()
            learner.update(buffer)
            collect_s.append(collected - started)
            update_s.append(time.perf_counter() - collected)
    finally:
        env.close()
    steps = config.num_steps * config.num_envs
    return {
        "collect_s": statistics.median(collect_s),
        "steps_per_s": steps / statistics.median(collect_s),
        "ppo_update_s": statistics.median(update_s),
        "weights_bytes": _bytes(policy.state_dict()),
        "rollout_bytes": sum(
            tensor.numel() * tensor.element_size()
            for tensor in (
                buffer.observations,
                buffer.actions,
                buffer.log_probs,
                buffer.values,
                buffer.rewards,
                buffer.terminations,
                buffer.truncations,
                buffer.final_values,
                buffer.next_values,
            )
        ),
    }


def time_ray(args: argparse.Namespace, samplers: int) -> dict[str, Any]:
    config = _config(args, samplers)
    distributed = RaySampler(config)
    policy, buffer = _policy_buffer(config)
    try:
        distributed.start(policy, buffer)
        nodes = len({info["node_id"] for info in distributed.describe()})
        distributed.reset(seed=0)
        distributed.collect()  # warm-up: first weights, first fetches
        rows = []
        for _ in range(args.updates):
            started = time.perf_counter()
            distributed.collect()
            rows.append({"collect_s": time.perf_counter() - started, **distributed.timings})
    finally:
        distributed.close()
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    steps = config.num_steps * config.num_envs
    return {"samplers": samplers, "nodes": nodes, "steps_per_s": steps / median["collect_s"]} | {
        key: value for key, value in median.items()
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ray = import_ray()
    torch.set_num_threads(1)
    local = time_local(args)
    cpus = max(os.cpu_count() or 1, int(max(args.samplers) * args.sampler_cpus + 0.999))
    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        points = [time_ray(args, samplers) for samplers in args.samplers]
    finally:
        ray.shutdown()
    steps = args.num_steps * args.num_envs
    print(
        f"{args.env}, N={args.num_envs} envs, T={args.num_steps}, {steps} steps per rollout; "
        f"{os.cpu_count()} cores; weights {local['weights_bytes'] / 1024:.1f} KiB, "
        f"rollout {local['rollout_bytes'] / 1024:.1f} KiB"
    )
    print(
        f"local Sampler: {local['steps_per_s']:,.0f} steps/s "
        f"({local['collect_s'] * 1e3:.1f} ms/rollout); PPO update {local['ppo_update_s'] * 1e3:.1f} ms"
    )
    header = (
        f"{'K':>3} {'nodes':>5} {'steps/s':>9} {'rollout ms':>10} {'broadcast ms':>12} "
        f"{'sample ms':>9} {'gather ms':>9} {'slowest actor ms':>16}"
    )
    print(header)
    for point in points:
        print(
            f"{point['samplers']:>3} {point['nodes']:>5} {point['steps_per_s']:>9,.0f} "
            f"{point['collect_s'] * 1e3:>10.1f} {point['broadcast_s'] * 1e3:>12.2f} "
            f"{point['sample_s'] * 1e3:>9.1f} {point['gather_s'] * 1e3:>9.2f} "
            f"{point['actor_sample_s_max'] * 1e3:>16.1f}"
        )
    result = {
        "args": vars(args),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "local": local,
        "points": points,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
