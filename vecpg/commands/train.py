"""``vecpg train``: train REINFORCE, A2C or PPO on a Gymnasium env.

One option per :class:`vecpg.run.config.TrainConfig` field (help text from the field
metadata), plus ``--config FILE`` (YAML or TOML); options given on the command line
override the file. torch is imported inside :func:`run` only.

The run-operation options (``--checkpoint-interval``, ``--keep-checkpoints``,
``--tensorboard``, ``--quiet``, ``--overwrite``, ``--resume``) are command options, not
TrainConfig fields: they say how this process operates the run, not what is trained, so
changing them on ``--resume`` is never a config change, and config.yaml and the
checkpoints hold only what defines the experiment. The trainer gets them as callbacks,
in this order: metrics CSV, TensorBoard, checkpoints, health, progress (health asks the
checkpoint callback to save a failing state before it raises; progress runs last so its
line shows the row every other callback has handled).

Before anything is written, the run directory is claimed (:func:`vecpg.run.run_dir.claim`):
locked for the life of the run, and refused if it holds another run (unless
``--overwrite``); the lock is released once the trainer has closed its envs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any

from vecpg.commands.process_start import start_up
from vecpg.run.config import _TYPES, FIELDS, field_help

HELP = "train a policy (PPO, A2C or REINFORCE) on a Gymnasium env"
DESCRIPTION = (
    "Train a policy on a Gymnasium env with parallel sampling. Every hyperparameter can be "
    "set here or in a YAML/TOML file given with --config; command-line values override the "
    "file. Defaults depend on --algo. Writes config.yaml, metrics.csv, checkpoints/, "
    "health.jsonl (only when a health check fires) and tensorboard/ into the run dir. "
    "--resume RUN_DIR continues a stopped run from its latest readable checkpoint; a "
    "--run-dir that already holds a run is refused unless --overwrite is given. SIGTERM and "
    "SIGHUP stop a run as Ctrl-C does, with a final checkpoint."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML (.yaml/.yml) or TOML (.toml) file of option: value pairs",
    )
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = str(_TYPES[name])
        # argparse.SUPPRESS as default: only options the user typed reach the config, so
        # per-algorithm defaults and config-file values are not overwritten.
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        options["help"] = field_help(name)
        if "choices" in spec.metadata:
            options["choices"] = spec.metadata["choices"]
        if "bool" in kind:
            options["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("list"):
            options.update(nargs="*", type=int, metavar="SIZE")
        elif "int" in kind:
            options.update(type=int, metavar="N")
        elif "float" in kind:
            options.update(type=float, metavar="X")
        elif "choices" not in spec.metadata:
            options["metavar"] = name.split("_")[-1].upper()
        parser.add_argument(flag, **options)
    _add_operation_arguments(parser.add_argument_group("run operation"))


def _add_operation_arguments(group: argparse._ArgumentGroup) -> None:
    from vecpg.run import tensorboard_log

    group.add_argument(
        "--checkpoint-interval",
        type=int,
        default=100_000,
        metavar="STEPS",
        help="save a checkpoint every STEPS env steps, plus a final one (0: final only)",
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="K",
        help="keep the last K checkpoints (older ones are deleted)",
    )
    group.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=tensorboard_log.available(),
        help="write TensorBoard event files to RUN_DIR/tensorboard (default: on when the "
        "tensorboard package is installed)",
    )
    group.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output; print only the final summary line (and warnings)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a --run-dir that already holds a run, deleting that run's "
        "config, metrics, checkpoints and TensorBoard files (without it, such a directory "
        "is refused)",
    )
    group.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (the env's preset, --config FILE and the "
        "options given, as config.yaml would record it) and exit without training",
    )
    group.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its latest readable checkpoint, appending "
        "to its metrics; options given with it override the saved config where that is "
        "safe (e.g. --total-steps to train longer); --env, --algo, --num-envs and the "
        "network shape cannot change",
    )


def _cli_values(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def _format_return(value: float) -> str:
    return "n/a (no episode finished)" if math.isnan(value) else f"{value:.1f}"


def _check_operation_arguments(args: argparse.Namespace) -> None:
    from vecpg.errors import ConfigError

    if args.checkpoint_interval < 0:
        raise ConfigError(
            f"--checkpoint-interval must be >= 0 (0: final checkpoint only), "
            f"got {args.checkpoint_interval}"
        )
    if args.keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be >= 1, got {args.keep_checkpoints}")
    if args.overwrite and args.resume is not None:
        raise ConfigError("--overwrite starts a run over and --resume continues one: use one")
    if args.print_config and args.resume is not None:
        raise ConfigError(
            "--print-config shows a new run's configuration; a resumed run's is in its config.yaml"
        )


@contextlib.contextmanager
def _out_of_memory_as_error() -> Iterator[None]:
    """Turn torch running out of (GPU or CPU) memory into a one-line error.

    The trainer has closed the envs and written what it could by the time this sees it.
    """
    import torch

    from vecpg.errors import VecpgError

    try:
        yield
    except RuntimeError as error:  # torch.OutOfMemoryError, or the CPU allocator's error
        text = str(error).strip()
        if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in text:
            raise
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise VecpgError(
            f"out of memory ({first_line}); use smaller --hidden-sizes, --num-envs or "
            "--num-steps, or --device cpu"
        ) from None


def run(args: argparse.Namespace) -> int:
    from vecpg.run.config import load_config_file, resolve_config

    _check_operation_arguments(args)
    file_values = load_config_file(args.config) if args.config else {}
    if args.resume is None:
        config = resolve_config(file_values, _cli_values(args))
        if args.print_config:
            from vecpg.run.config import config_file_text

            print(config_file_text(config)[1], end="")
            return 0

    # Imports, the run directory and the trainer are made with the collector paused.
    with start_up():
        from vecpg.commands.messages import warnings_as_lines
        from vecpg.run import run_dir as run_dirs
        from vecpg.run.checkpoint import CheckpointCallback
        from vecpg.run.env_factory import env_factory
        from vecpg.run.health import HealthCallback
        from vecpg.run.metrics import MetricsCSV
        from vecpg.run.progress import ProgressCallback
        from vecpg.run.trainer import Trainer, default_run_dir

        # The run directory is claimed (locked, checked to be free) before anything is
        # written into it, and held until the run has ended and its workers are reaped.
        if args.resume is not None:
            claimed = run_dirs.claim(args.resume, resume=True)
        else:
            env_factory(config.env)  # an unknown env fails here, before a directory is made
            if config.run_dir is not None:
                claimed = run_dirs.claim(config.run_dir, overwrite=args.overwrite)
            else:
                claimed = run_dirs.claim(default_run_dir(config), created=True)
    progress = ProgressCallback(None, quiet=args.quiet)
    with claimed, warnings_as_lines(progress), _out_of_memory_as_error():
        with start_up():
            if claimed.replaced and not args.quiet:
                print(
                    f"vecpg: --overwrite: deleted the previous run in {claimed.path} "
                    f"({', '.join(claimed.replaced)})",
                    file=sys.stderr,
                )
            plan = None
            if args.resume is not None:
                from vecpg.run import resume

                plan = resume.prepare(args.resume, {**file_values, **_cli_values(args)})
                config = plan.config
            progress.total_steps = config.total_steps
            callbacks: list[Any] = [MetricsCSV()]
            if args.tensorboard:
                from vecpg.run.tensorboard_log import TensorBoardCallback

                callbacks.append(TensorBoardCallback())
            saver = CheckpointCallback(args.checkpoint_interval, keep_last=args.keep_checkpoints)
            callbacks += [saver, HealthCallback(checkpoint=saver), progress]
            trainer = Trainer(config, claimed.path, callbacks=callbacks)
            if plan is not None:
                try:
                    trainer.load_state_dict(plan.checkpoint.state)
                except BaseException:
                    trainer.close()
                    raise
                if not args.quiet:
                    dropped = (
                        f"; dropped {plan.rows_dropped} metrics rows logged after it"
                        if plan.rows_dropped
                        else ""
                    )
                    print(
                        f"vecpg: resuming {plan.run_dir} from {plan.checkpoint.path.name} "
                        f"(step {plan.checkpoint.step:,}, update {trainer.update:,}){dropped}",
                        file=sys.stderr,
                    )
        summary = trainer.train()
    solved = (
        f", reached {config.stop_at_return:g}" if summary["stop_reason"] == "stop_at_return" else ""
    )
    resumed = f" (resumed at {plan.checkpoint.step:,})" if plan is not None else ""
    print(
        f"vecpg: {config.algo} on {config.env}: {summary['global_step']:,} steps{resumed} in "
        f"{summary['time_s']:.1f} s ({summary['sps']:,.0f} steps/s), mean return "
        f"{_format_return(summary['episode_return_mean'])} over the last 20 episodes"
        f"{solved}; run dir {summary['run_dir']}"
    )
    return 0
