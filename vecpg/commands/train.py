"""``vecpg train``: train REINFORCE, A2C or PPO on a Gymnasium env.

One option per :class:`vecpg.config.TrainConfig` field (help text from the field
metadata), plus ``--config FILE`` (YAML or TOML); options given on the command line
override the file. torch is imported inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from vecpg.config import _TYPES, FIELDS, field_help

HELP = "train a policy (PPO, A2C or REINFORCE) on a Gymnasium env"
DESCRIPTION = (
    "Train a policy on a Gymnasium env with parallel sampling. Every hyperparameter can be "
    "set here or in a YAML/TOML file given with --config; command-line values override the "
    "file. Defaults depend on --algo. Writes config.yaml and metrics.csv into the run dir."
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
            options.update(nargs="+", type=int, metavar="SIZE")
        elif "int" in kind:
            options.update(type=int, metavar="N")
        elif "float" in kind:
            options.update(type=float, metavar="X")
        elif "choices" not in spec.metadata:
            options["metavar"] = name.split("_")[-1].upper()
        parser.add_argument(flag, **options)


def _cli_values(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}


def _format_return(value: float) -> str:
    return "n/a (no episode finished)" if math.isnan(value) else f"{value:.1f}"


def run(args: argparse.Namespace) -> int:
    from vecpg.config import load_config_file, resolve_config

    file_values = load_config_file(args.config) if args.config else {}
    config = resolve_config(file_values, _cli_values(args))

    from vecpg.metrics import MetricsCSV
    from vecpg.trainer import Trainer

    trainer = Trainer(config, callbacks=[MetricsCSV()])
    summary = trainer.train()
    solved = (
        f", reached {config.stop_at_return:g}" if summary["stop_reason"] == "stop_at_return" else ""
    )
    print(
        f"vecpg: {config.algo} on {config.env}: {summary['global_step']:,} steps in "
        f"{summary['time_s']:.1f} s ({summary['sps']:,.0f} steps/s), mean return "
        f"{_format_return(summary['episode_return_mean'])} over the last 20 episodes"
        f"{solved}; run dir {summary['run_dir']}"
    )
    return 0
