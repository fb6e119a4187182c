"""What the supervisor sends a worker whose data loop went silent, and when.

First SIGQUIT: the worker's own handler runs on its main thread, holding the GIL, writes every
thread's stack and aborts. No other thread moves its frames while they are written. Then, if
that handler could not run (the main thread is held in C code), SIGABRT: faulthandler's dump
from inside the signal, which races the threads still running and can crash part-way (CPython
issue 116008). Last SIGKILL, repeated until the process is gone. Each signal but SIGKILL is
followed by SIGCONT, so that a stopped process acts on it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

LADDER = (  # each signal, and how long the worker then has to exit before the next one
    (signal.SIGQUIT, 3.0),
    (signal.SIGABRT, 5.0),
    (signal.SIGKILL, 5.0),
)


@dataclass
class StuckWorker:
    """The signals sent so far to one stuck worker process."""

    pid: int
    sent: int = 0
    sent_at: float = 0.0

    def step(self, now: float) -> signal.Signals | None:
        """Sends the next signal once the last one's grace is over; returns it, or None while
        the worker still has time to exit."""
        if self.sent and now - self.sent_at <= _rung(self.sent - 1)[1]:
            return None
        signum = _rung(self.sent)[0]
        try:
            os.kill(self.pid, signum)
            if signum != signal.SIGKILL:
                os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # exited meanwhile: reaped at the supervisor's next turn
        self.sent += 1
        self.sent_at = now
        return signum


def _rung(index: int) -> tuple[signal.Signals, float]:
    """The ladder's ``index``-th step; its last (SIGKILL) repeats."""
    return LADDER[min(index, len(LADDER) - 1)]
