"""Does overlapping policy inference with env stepping pay? (``--overlap-inference``)

Times ``Sampler.collect`` (T steps of N envs with policy inference, no learning) with the
two halves of the envs stepped in alternation against one batch, on the same vector-env
layout (2 worker processes), interleaved, median of ``--repeats`` runs per point. Two
workloads: CartPole with vecpg's default 64-64 MLP (inference is per-call overhead, so
two half-batches cost twice one batch: overlap should not pay), and 84x84x4 images from
an env that costs ~1 ms of CPU per step (BusyImageEnv) with vecpg's NatureCNN actor and
critic, whose inference grows with the batch (overlap pays when one half's stepping takes
about as long as the other half's inference).

    python benchmarks/overlap.py                  # ~1 min
    python benchmarks/overlap.py --repeats 5 --out benchmarks/results/overlap.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from vecpg.run.config import resolve_config
from vecpg.run.trainer import Trainer

WORKLOADS = {
    "CartPole-v1, MLP 64-64": {"env": "CartPole-v1", "hidden_sizes": [64, 64]},
    "BusyImageEnv ~1 ms, NatureCNN": {"env": "vecpg.bench.envs:BusyImageEnv"},
}


def collect_rate(trainer: Trainer, rollouts: int) -> float:
    """Env steps per second of ``rollouts`` collects (after one warm-up collect)."""
    sampler = trainer.sampler
    sampler.collect()
    started = time.perf_counter()
    for _ in range(rollouts):
        sampler.collect()
    steps = rollouts * trainer.buffer.num_steps * trainer.buffer.num_envs
    return steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/overlap.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for name, workload in WORKLOADS.items():
        trainers = {}
        for overlap in (False, True):
            config = resolve_config(
                cli_values={
                    **workload,
                    "num_envs": args.num_envs,
                    "num_steps": args.num_steps,
                    "num_workers": 2,
                    "overlap_inference": overlap,
                    "run_dir": "/tmp/vecpg-overlap-benchmark",
                }
            )
            trainers[overlap] = Trainer(config)
            trainers[overlap].sampler.reset(seed=0)
        rates: dict[bool, list[float]] = {False: [], True: []}
        try:
            for _ in range(args.repeats):
                for overlap, trainer in trainers.items():
                    rates[overlap].append(collect_rate(trainer, args.rollouts))
        finally:
            for trainer in trainers.values():
                trainer.close()
        one, halves = statistics.median(rates[False]), statistics.median(rates[True])
        results.append(
            {
                "workload": name,
                "one_batch_steps_per_s": one,
                "overlapped_steps_per_s": halves,
                "speedup": halves / one,
                "runs": {"one_batch": rates[False], "overlapped": rates[True]},
            }
        )
    print(f"{'workload':32s} {'one batch':>12s} {'overlapped':>12s} {'speedup':>8s}")
    for row in results:
        print(
            f"{row['workload']:32s} {row['one_batch_steps_per_s']:12,.0f} "
            f"{row['overlapped_steps_per_s']:12,.0f} {row['speedup']:8.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
