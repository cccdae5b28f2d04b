"""Hold back Ctrl-C, SIGTERM and SIGHUP while the trainer finishes one update.

A stop that lands in the middle of an update (some gradient steps taken, no metrics row
yet) leaves a state that matches no logged update: the final checkpoint could only drop
it, and a run that saves only at the end would have none to resume from. For the update,
its row and its callbacks, the stop signals' handlers are replaced by one that notes the
signal; afterwards the handlers are restored and a noted signal is raised again, so it
is handled as usual the moment the update is complete. The wait is one update's time
(milliseconds for an MLP, seconds for a CNN on a CPU).

Why not ``pthread_sigmask``: it blocks a signal in one thread only, and the kernel hands a
process-directed signal to any thread that does not block it (torch's thread pool);
Python then runs the handler in the main thread all the same.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

DEFERRED = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Note the stop signals that arrive in the ``with`` block; raise the first after it.

    Handlers set to ``SIG_IGN`` stay ignored. Python sets handlers in the main thread
    only; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(number: int, frame: FrameType | None) -> None:
        noted.append(number)

    previous = {}
    for number in DEFERRED:
        handler = signal.getsignal(number)
        if handler is not signal.SIG_IGN and handler is not None:
            previous[number] = signal.signal(number, note)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if noted:
            signal.raise_signal(noted[0])
