"""The supervisor reads state without waiting for LMDB's one writer lock. A worker can be
stuck, or stopped, inside a write transaction; the supervisor has to go on reading state (its
status report, placement) to notice that worker and kill it, which is what frees the lock.
Found in a test run: the supervisor hung in its status report behind a stopped worker's write
transaction, so the worker was never replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from state.env import open_state
from supervisor.boot import read_placeables, sync_specs
from supervisor.readiness import read_counts
from tests.support.forks import exit_of, forked, holding_the_writer_lock


def finishes(call: Callable[[], object], children: list[int], timeout_s: float) -> bool:
    """Whether ``call``, run in a child process, returns within ``timeout_s``."""
    def loop(ready: Callable[[], None]) -> None:
        ready()
        call()
    pid = forked(lambda: None, loop)
    children.append(pid)
    return exit_of(pid, timeout_s) == 0


def test_the_supervisors_reads_do_not_wait_for_a_stuck_writer(
        tmp_path: Path, children: list[int]) -> None:
    sync_specs(tmp_path, [], 0.0)  # what boot does: state and its sub-databases exist
    holder = forked(lambda: None, holding_the_writer_lock(tmp_path))
    children.append(holder)
    os.kill(holder, signal.SIGSTOP)

    assert not finishes(lambda: open_state(tmp_path).close(), children, 1.0), \
        "the holder has the lock: a writable open waits for it"
    assert finishes(lambda: read_counts(tmp_path, set()), children, 10.0)
    assert finishes(lambda: read_placeables(tmp_path), children, 10.0)
