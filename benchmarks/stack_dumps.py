"""How often a stuck worker's stack dump crashes, for each signal the supervisor may send first.

    python3 -m benchmarks.stack_dumps [--trials 200] [--out benchmarks/results/stack_dumps.json]

Each trial forks a process like a busy worker: faulthandler enabled, four threads recursing
deeply in Python, the main thread alternating short selects and deep calls. It is stopped
(SIGSTOP), sent the signal and SIGCONT, as ``supervisor.stuck`` does, and its exit is recorded.
SIGABRT: faulthandler dumps every thread from inside the signal while the others run again
(CPython issue 116008); a crash there ends the process with SIGSEGV. SIGQUIT: the worker's own
handler (``workers.main.dump_stacks_and_abort``) dumps them holding the GIL, then aborts.
Dumps go to /dev/null; only the exit is counted.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import select
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from workers.main import dump_stacks_and_abort

DEPTH = 400  # deep enough that the threads' frame stacks grow and shrink by whole chunks


def recurse(n: int) -> int:
    return n if n < 2 else recurse(n - 1) + 1


def busy_thread() -> None:
    while True:
        recurse(DEPTH)


def stuck_worker(first_signal: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    faulthandler.enable(file=2, all_threads=True)
    if first_signal == signal.SIGQUIT:
        signal.signal(signal.SIGQUIT, dump_stacks_and_abort)
    for _ in range(4):
        threading.Thread(target=busy_thread, daemon=True).start()
    while True:
        select.select([], [], [], 0.0005)
        recurse(DEPTH)


def trial(first_signal: int) -> str:
    pid = os.fork()
    if pid == 0:
        try:
            stuck_worker(first_signal)
        finally:
            os._exit(1)
    time.sleep(0.15)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.01)
    os.kill(pid, first_signal)
    os.kill(pid, signal.SIGCONT)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return signal.Signals(-code).name if code < 0 else f"exit {code}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stack_dumps.json"))
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # aborts and crashes leave no core files
    results = {}
    for first_signal in (signal.SIGABRT, signal.SIGQUIT):
        exits = Counter(trial(first_signal) for _ in range(args.trials))
        results[first_signal.name] = dict(exits)
        crashed = args.trials - exits["SIGABRT"]
        print(f"{first_signal.name:8} trials={args.trials:4} died of SIGABRT={exits['SIGABRT']:4} "
              f"otherwise={crashed:4} ({100 * crashed / args.trials:.0f} %)  {dict(exits)}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trials": args.trials, "exits": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
