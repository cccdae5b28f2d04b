"""The ``vecpg`` command line: a thin dispatcher over ``vecpg/commands/``.

Each subcommand is a module in :mod:`vecpg.commands` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports
(torch, matplotlib, ray) inside ``run`` so that ``vecpg --help`` stays fast.

Errors that a user can cause (:class:`~vecpg.errors.VecpgError`: commands turn bad values
into :class:`~vecpg.errors.ConfigError`) are printed as one line, ``vecpg: error: ...``, with exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vecpg import __version__
from vecpg.errors import VecpgError

# subcommand -> module in vecpg.commands
COMMANDS = {
    "train": "train",
    "eval": "evaluate",
    "bench": "bench",
    "doctor": "doctor",
    "plot": "plot",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vecpg",
        description="Parallel-sampling policy-gradient training (REINFORCE, A2C, PPO).",
    )
    parser.add_argument("--version", action="version", version=f"vecpg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"vecpg.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"vecpg.commands.{module_name}":
                raise
            continue  # a command not built yet in this checkout
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=_HelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except VecpgError as error:
        print(f"vecpg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vecpg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
