"""What a stuck worker is sent (supervisor.stuck), and what the worker does with the first
signal (workers.main.dump_stacks_and_abort), on real forked processes. The clock the ladder
is given is made up, so no test waits for a grace period."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable

from supervisor.stuck import StuckWorker
from tests.support.forks import exit_of, forked
from workers.main import dump_stacks_and_abort


def ignoring(*signums: int) -> Callable[[], None]:
    def setup() -> None:
        for signum in signums:
            signal.signal(signum, signal.SIG_IGN)
    return setup


def test_a_worker_that_ignores_sigquit_gets_sigabrt_after_its_grace(children: list[int]) -> None:
    pid = forked(ignoring(signal.SIGQUIT))
    children.append(pid)
    stuck = StuckWorker(pid)
    assert stuck.step(100.0) == signal.SIGQUIT
    assert exit_of(pid, 0.5) is None
    assert stuck.step(102.9) is None  # within SIGQUIT's 3 s
    assert stuck.step(103.1) == signal.SIGABRT
    assert exit_of(pid) == -signal.SIGABRT


def test_a_worker_that_ignores_both_is_killed_and_killed_again(children: list[int]) -> None:
    pid = forked(ignoring(signal.SIGQUIT, signal.SIGABRT))
    children.append(pid)
    stuck = StuckWorker(pid)
    assert stuck.step(0.0) == signal.SIGQUIT
    assert stuck.step(3.5) == signal.SIGABRT
    assert exit_of(pid, 0.5) is None
    assert stuck.step(8.4) is None  # within SIGABRT's 5 s
    assert stuck.step(8.6) == signal.SIGKILL
    assert exit_of(pid) == -signal.SIGKILL
    assert stuck.step(13.7) == signal.SIGKILL  # every 5 s until reaped; a gone pid is no error


def test_a_stopped_worker_is_continued_so_that_it_acts_on_sigquit(children: list[int]) -> None:
    def setup() -> None:
        signal.signal(signal.SIGQUIT, lambda signum, frame: os._exit(7))

    pid = forked(setup)
    children.append(pid)
    os.kill(pid, signal.SIGSTOP)
    assert StuckWorker(pid).step(0.0) == signal.SIGQUIT
    assert exit_of(pid) == 7


def test_sigquit_writes_every_threads_stack_and_the_worker_dies_of_sigabrt(
        children: list[int]) -> None:
    """The worker's handler, on a process whose other threads keep running Python code."""
    read_end, write_end = os.pipe()

    def setup() -> None:
        os.dup2(write_end, 2)
        faulthandler.enable(file=2, all_threads=True)  # as a worker has it

        def busy_side_thread() -> None:
            while True:
                sum(range(1000))

        for _ in range(3):
            threading.Thread(target=busy_side_thread, daemon=True).start()
        signal.signal(signal.SIGQUIT, dump_stacks_and_abort)

    def main_thread_loop(ready: Callable[[], None]) -> None:
        ready()
        while True:
            time.sleep(0.001)

    pid = forked(setup, main_thread_loop)
    children.append(pid)
    os.close(write_end)
    StuckWorker(pid).step(0.0)
    assert exit_of(pid) == -signal.SIGABRT
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    assert text.startswith(f"Stuck worker pid={pid}: thread stacks (SIGQUIT)\n"), text
    assert text.count("in busy_side_thread") == 3, text
    current = text.split("Current thread", 1)[1].split("\n\n", 1)[0]
    assert "in dump_stacks_and_abort" in current and "in main_thread_loop" in current, text
    assert "Fatal Python error" not in text, text  # no second, racy dump from faulthandler
