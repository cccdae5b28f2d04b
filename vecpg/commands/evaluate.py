"""``vecpg eval``: evaluate a trained policy for exactly N episodes on fresh envs.

torch is imported inside :func:`run` only (through :mod:`vecpg.run.evaluate`).
"""

from __future__ import annotations

import argparse

HELP = "evaluate a run's latest checkpoint (or a .pt file) for N episodes on fresh envs"
DESCRIPTION = (
    "Load the latest readable checkpoint of a run directory (or the given .pt file), rebuild "
    "the policy and its frozen observation normalizer from the saved config, and run the "
    "deterministic policy (the distribution's mode/mean) for exactly N complete episodes on "
    "freshly seeded envs; print mean ± std (min, max) of the return and length. Each of the "
    "E envs contributes a fixed share of the N episodes (its first ones), so short episodes "
    "are not over-represented. --stochastic also evaluates the sampling policy; --video "
    "records episodes (needs the video extra: moviepy)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="RUN_DIR_OR_CHECKPOINT",
        help="a run directory written by vecpg train (its latest readable checkpoint is used) "
        "or a checkpoint .pt file",
    )
    parser.add_argument(
        "--episodes", type=int, default=10, metavar="N", help="complete episodes to evaluate"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="env i is reset with seed + i (default: the training seed + 1,000,000,000, so "
        "evaluation never replays the training seeds)",
    )
    parser.add_argument(
        "--num-envs",
        type=int,
        default=4,
        metavar="E",
        help="parallel envs (capped at --episodes); results depend on it, keep it fixed to "
        "compare runs",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("auto", "cpu", "cuda"),
        help="torch device for the policy; auto picks cuda when available",
    )
    parser.add_argument(
        "--vector",
        default=None,
        choices=("subproc", "sync", "native"),
        help="vector env: subproc (vecpg's worker processes), sync (in-process) or native "
        "(the env family's C++ vector env); "
        "default: the run's",
    )
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="also evaluate the sampling (stochastic) policy, on the same env seeds",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON line (with per-episode returns and lengths)",
    )
    parser.add_argument(
        "--video",
        default=None,
        metavar="DIR",
        help="record deterministic episodes as MP4 into DIR with Gymnasium's RecordVideo "
        "(skipped with a message when moviepy is missing or the env cannot render rgb_array)",
    )
    parser.add_argument(
        "--video-episodes",
        type=int,
        default=1,
        metavar="K",
        help="episodes to record with --video (extra episodes in one in-process env)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from vecpg.errors import ConfigError

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1 (got {args.episodes})")
    if args.num_envs < 1:
        raise ConfigError(f"--num-envs must be >= 1 (got {args.num_envs})")
    if args.video_episodes < 1:
        raise ConfigError(f"--video-episodes must be >= 1 (got {args.video_episodes})")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise ConfigError(f"--seed must be between 0 and {2**64 - 1} (got {args.seed})")

    from vecpg.commands.process_start import start_up

    with start_up():  # torch's import, the bulk of start-up, with the collector paused
        import torch

        from vecpg.commands.messages import warnings_as_lines
        from vecpg.run.evaluate import LoadedPolicy, evaluate

    def use_run_threads(loaded: LoadedPolicy) -> None:
        # Small policies are fastest single-threaded, as in training (torch_threads).
        if loaded.config.torch_threads > 0:
            torch.set_num_threads(loaded.config.torch_threads)

    with warnings_as_lines():
        report = evaluate(
            args.source,
            args.episodes,
            seed=args.seed,
            num_envs=args.num_envs,
            device=args.device,
            stochastic=args.stochastic,
            vector=args.vector,
            video_dir=args.video,
            video_episodes=args.video_episodes,
            on_loaded=use_run_threads,
        )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.format())
    return 0
