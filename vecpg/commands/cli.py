"""The ``vecpg`` command line: a thin dispatcher over ``vecpg/commands/``.

Each subcommand is a module in :mod:`vecpg.commands` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports
(torch, matplotlib, ray) inside ``run`` so that ``vecpg --help`` stays fast.

Errors that a user can cause (:class:`~vecpg.errors.VecpgError`: commands turn bad values
into :class:`~vecpg.errors.ConfigError`), and file operations the system refuses (a full
disk, a read-only file system, permissions), are printed as one line,
``vecpg: error: ...``, with exit status 2; anything else is a bug and keeps its traceback.

Stopping: Ctrl-C prints ``vecpg: interrupted`` (status 130). SIGTERM and SIGHUP, the way
``kill``, docker, Slurm and Kubernetes stop a job, raise :class:`~vecpg.errors.Terminated`,
a KeyboardInterrupt, so they stop a command exactly as Ctrl-C does (``vecpg train``
writes its final checkpoint, workers and Ray actors are reaped), then print
``vecpg: terminated`` and exit with 128 + the signal number (143 for SIGTERM). A signal
the caller ignores stays ignored (``nohup`` keeps working).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from vecpg import __version__
from vecpg.errors import (
    DISK_FULL,
    REFUSED_BY_SYSTEM,
    Terminated,
    VecpgError,
    describe_refused,
)

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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    The first signal raises; later ones are ignored, so the shutdown it starts (the final
    checkpoint, reaping workers) is not cut short (SIGKILL still ends the process). The
    previous handlers are restored on exit. A signal that is ignored on entry is left so.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, frame: FrameType | None) -> None:
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(number)

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except OSError:  # stderr went with the terminal (SIGHUP)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with stop_signals_interrupt():
            return int(args._run(args) or 0)
    except VecpgError as error:
        _say(f"vecpg: error: {error}")
        return 2
    except Terminated as stop:
        name = signal.Signals(stop.signal_number).name
        _say("vecpg: terminated" + ("" if stop.signal_number == signal.SIGTERM else f" ({name})"))
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        _say("vecpg: interrupted")
        return 130
    except OSError as error:
        if error.errno not in REFUSED_BY_SYSTEM:
            raise
        what_to_do = (
            "make room, then try again"
            if error.errno in DISK_FULL
            else "check the permissions, or choose another path"
        )
        _say(f"vecpg: error: {describe_refused(error)}; {what_to_do}")
        return 2


def console_main() -> None:
    """The ``vecpg`` command: :func:`main`, with start-up's garbage collection paused
    (:mod:`vecpg.commands.process_start`) and multiprocessing's helpers stopped before the
    process ends (:mod:`vecpg.commands.process_exit`)."""
    import atexit

    from vecpg.commands import process_start
    from vecpg.commands.process_exit import stop_multiprocessing_helpers

    atexit.register(stop_multiprocessing_helpers)  # first registered, so it runs last
    process_start.own_process()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
