"""Forked child processes for tests of signals and locks (the ``children`` fixture in
``tests/conftest.py`` kills and reaps them after the test)."""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from deploy.local.processes import wait_until
from state.env import open_state


def sleep_forever(ready: Callable[[], None]) -> None:
    ready()
    while True:
        time.sleep(1)


def forked(setup: Callable[[], None],
           loop: Callable[[Callable[[], None]], None] = sleep_forever) -> int:
    """A child process that runs ``setup`` (its signal handlers), then ``loop``; its pid, once
    ``loop`` has called the ``ready`` it is given (so a signal sent then finds ``loop``'s
    frame on the main thread's stack). It exits 0 if ``loop`` returns, 1 if anything raised."""
    read_end, write_end = os.pipe()

    def ready() -> None:
        os.write(write_end, b"r")

    pid = os.fork()
    if pid == 0:
        code = 1  # setup or loop raised
        try:
            faulthandler.disable()  # pytest's, inherited: it would dump this child's stacks too
            setup()
            loop(ready)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as child_says:
        assert child_says.read(1) == b"r"
    return pid


def exit_of(pid: int, timeout_s: float = 10.0) -> int | None:
    """The child's exit code (negative: the signal that killed it), or None if still running
    after ``timeout_s``."""
    codes: list[int] = []

    def exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            codes.append(os.waitstatus_to_exitcode(status))
        return bool(done)

    return codes[0] if wait_until(exited, timeout_s) else None


def holding_the_writer_lock(data_dir: Path) -> Callable[[Callable[[], None]], None]:
    """A child's loop: in a write transaction, as a worker writing a checkpoint is."""
    def loop(ready: Callable[[], None]) -> None:
        state = open_state(data_dir)
        with state.env.begin(write=True) as txn:
            txn.put(b"held", b"1", db=state.dbs["meta"])
            ready()
            signal.pause()
    return loop
