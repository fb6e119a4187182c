"""CPU and memory of a process tree, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deploy.local.processes import child_pids

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Memory:
    """Summed over a process tree: RSS counts shared pages once per process, PSS splits them."""

    processes: int
    rss_kb: int
    pss_kb: int


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children, their children, ...)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        children = child_pids(pending.pop())
        found += children
        pending += children
    return found




def tree_cpu_s(root: int) -> float:
    """CPU seconds of root (with its reaped children) plus its live descendants.

    The root's cutime/cstime hold the children it has already waited for (a killed worker), so
    the sum only grows; a live descendant's own cutime covers its reaped children in turn.
    """
    return sum(process_cpu_s(pid) for pid in [root, *descendants(root)])


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process (all its threads) and of the children it has waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime, stime, cutime, cstime are fields 14 to 17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS_PER_S


def tree_memory(root: int) -> Memory:
    pids = [root, *descendants(root)]
    return Memory(len(pids), sum(_status_kb(pid, "VmRSS") for pid in pids),
                  sum(_rollup_kb(pid, "Pss") for pid in pids))


def _status_kb(pid: int, field: str) -> int:
    return _field_kb(Path(f"/proc/{pid}/status"), field)


def _rollup_kb(pid: int, field: str) -> int:
    return _field_kb(Path(f"/proc/{pid}/smaps_rollup"), field)


def _field_kb(path: Path, field: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    prefix = f"{field}:"
    for line in lines:
        if line.startswith(prefix):
            return int(line.split()[1])
    return 0


def tree_run_queue_waits_ns(root: int) -> dict[int, int]:
    """Per thread id of the tree, nanoseconds it spent runnable but waiting for a CPU
    (schedstat), so far. Per thread, because threads and processes end: a total over the live
    ones can shrink between two readings (``run_queue_wait_s``)."""
    waits: dict[int, int] = {}
    for pid in [root, *descendants(root)]:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                waits[int(task.name)] = int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return waits


def run_queue_wait_s(before: dict[int, int], after: dict[int, int]) -> float:
    """Waiting for a CPU between two readings, by the threads alive at the second: a thread
    that ended meanwhile is not counted; a smaller reading than before is a new thread that
    reuses the id."""
    total_ns = 0
    for tid, waited in after.items():
        earlier = before.get(tid, 0)
        total_ns += waited - earlier if waited >= earlier else waited
    return total_ns / 1e9


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields)
    return (total - idle) / CLOCK_TICKS_PER_S, total / CLOCK_TICKS_PER_S
