"""Idle cost of Kafka sinks in one worker-like process: shared producer vs one per sink.

    python3 -m benchmarks.idle_cost [--sinks 0,50,150] [--measure-s 10]
                                    [--out benchmarks/results/idle_cost.json]

Each case runs in a fresh Python process (so memory of one case does not linger in the next):
it opens N ``KafkaSink``s of N pipelines (distinct pipeline and sink ids, same brokers and
settings) through a ``ProducerPool``, shared (the product's default) or ``shared=False`` (one
producer per sink, as before sharing). Each sink checks its connection and delivers one event,
as a pipeline does when it starts, then all sit idle while the loop polls every sink every
``workers.main.MAX_SLEEP_S`` (at least as often as the worker loop steps an idle pipeline,
whose timer is about a second). Reported: RSS (VmRSS) and threads
(/proc/self/status), open file descriptors and sockets (/proc/self/fd) and CPU (getrusage, all
threads, librdkafka's included) over the measurement window.
Kafka: ``KAFKA_BROKERS`` if set, otherwise a private broker on free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka

from deploy.local.kafka import KafkaBroker
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import KafkaConfigSpec
from workers.events import ChangeEvent
from workers.main import MAX_SLEEP_S
from workers.sinks.kafka import KafkaSink
from workers.sinks.producers import ProducerPool

TOPIC = "idle-cost"
MODES = ("shared", "separate")
SETTLE_S = 2.0
DELIVERY_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sinks", default="0,50,150", help="comma-separated sink counts")
    parser.add_argument("--measure-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/idle_cost.json"))
    parser.add_argument("--case", nargs=3, metavar=("MODE", "SINKS", "BOOTSTRAP"),
                        help=argparse.SUPPRESS)  # one measurement, run in a child process
    args = parser.parse_args(argv)
    if args.case:
        mode, sinks, bootstrap = args.case
        print(json.dumps(measure_case(mode, int(sinks), bootstrap, args.measure_s)))
        return 0
    counts = [int(n) for n in args.sinks.split(",")]
    with kafka_brokers() as bootstrap:
        cases = [run_case(mode, n, bootstrap, args.measure_s) for n in counts for mode in MODES]
    report = summarize(cases, args.measure_s, argv)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    return 0


@contextmanager
def kafka_brokers() -> Iterator[str]:
    """``KAFKA_BROKERS`` if set; otherwise a private broker, stopped at the end."""
    existing = os.environ.get("KAFKA_BROKERS")
    if existing:
        yield existing
        return
    with tempfile.TemporaryDirectory(prefix="idle-cost-") as tmp:
        port = free_port()
        controller_port = next(p for p in iter(free_port, None) if p != port)
        broker = KafkaBroker(Path(tmp), port, controller_port)
        try:
            broker.start()
            broker.create_topic(TOPIC)
            yield broker.bootstrap
        finally:
            broker.stop()


def run_case(mode: str, sinks: int, bootstrap: str, measure_s: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.idle_cost", "--measure-s", str(measure_s),
            "--case", mode, str(sinks), bootstrap]
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=measure_s + 300)
    if done.returncode != 0:
        raise RuntimeError(f"case {mode} {sinks} failed:\n{done.stderr[-4000:]}")
    case: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{mode:>8} sinks={sinks:<4} rss_mib={case['rss_kib'] / 1024:7.1f} "
          f"threads={case['threads']:<5} sockets={case['sockets']:<5} "
          f"cpu={case['cpu_percent']:.2f}%", flush=True)
    return case


def measure_case(mode: str, count: int, bootstrap: str, measure_s: float) -> dict[str, Any]:
    """Open ``count`` sinks, deliver one event each, then measure while polling them idle."""
    pool = ProducerPool(shared=mode == "shared")
    sinks = [KafkaSink(f"idle-{i:03d}", "bench", KafkaConfigSpec(
        id=f"kafka-{i:03d}", brokers=bootstrap, topic=TOPIC), pool=pool) for i in range(count)]
    try:
        warm_up(sinks)
        time.sleep(SETTLE_S)
        cpu_s, wall_s = poll_idle(sinks, measure_s)
        status = proc_status()
        return {"mode": mode, "sinks": count,
                "producers": len(pool) if pool.shared else count,
                "rss_kib": status["VmRSS"], "threads": status["Threads"], **open_fds(),
                "cpu_s": round(cpu_s, 4), "wall_s": round(wall_s, 3),
                "cpu_percent": round(100 * cpu_s / wall_s, 3)}
    finally:
        for sink in sinks:
            sink.close()


def warm_up(sinks: list[KafkaSink]) -> None:
    """What a starting pipeline does: fetch metadata, then deliver (here one event)."""
    for index, sink in enumerate(sinks):
        sink.check_connection(timeout_s=30.0)
        sink.send_batch(1, [idle_event(index)])
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while any(sink.in_flight_batches() for sink in sinks):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up events not delivered in time")
        for sink in sinks:
            sink.poll(0.01)
            for outcome in sink.take_completed():
                if outcome.error is not None:
                    raise RuntimeError(f"warm-up delivery failed: {outcome.error}")


def poll_idle(sinks: list[KafkaSink], measure_s: float) -> tuple[float, float]:
    """Poll every sink once per idle loop turn for ``measure_s``; (CPU seconds, wall seconds)."""
    cpu_start, wall_start = cpu_seconds(), time.monotonic()
    while time.monotonic() - wall_start < measure_s:
        for sink in sinks:
            sink.poll(0.0)
            sink.take_completed()
        time.sleep(MAX_SLEEP_S)
    return cpu_seconds() - cpu_start, time.monotonic() - wall_start


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_status() -> dict[str, int]:
    """VmRSS (KiB) and Threads from /proc/self/status."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "Threads"):
            values[name] = int(rest.split()[0])
    return values


def open_fds() -> dict[str, int]:
    """Open file descriptors, and how many of them are sockets (broker connections)."""
    fd_dir = Path("/proc/self/fd")
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / fd))
        except OSError:
            continue  # closed meanwhile (the listing's own fd)
    return {"fds": len(targets), "sockets": sum(t.startswith("socket:") for t in targets)}


def idle_event(index: int) -> ChangeEvent:
    return ChangeEvent(
        event_id=f"1:bin.000001:{index}:0", op="c", db="bench", table="idle", before=None,
        after={"id": index}, primary_key=("id",), ts_ms=int(time.time() * 1000), server_id=1,
        file="bin.000001", pos=index, gtid=None, tx_id=None,
        position=BinlogPosition("bin.000001", index), tx_end=True, size_bytes=16)


def summarize(cases: list[dict[str, Any]], measure_s: float,
              argv: list[str] | None) -> dict[str, Any]:
    """Cases plus per-sink increments over the 0-sink case of the same mode."""
    empty = {c["mode"]: c for c in cases if c["sinks"] == 0}
    for case in cases:
        base = empty.get(case["mode"])
        if base is not None and case["sinks"]:
            n = case["sinks"]
            case["rss_kib_per_sink"] = round((case["rss_kib"] - base["rss_kib"]) / n, 1)
            case["threads_per_sink"] = round((case["threads"] - base["threads"]) / n, 2)
            case["cpu_percent_per_sink"] = round(
                (case["cpu_percent"] - base["cpu_percent"]) / n, 4)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python3 -m benchmarks.idle_cost",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "measure_s": measure_s, "poll_interval_s": MAX_SLEEP_S,
            "load_avg_1m_at_end": os.getloadavg()[0], "machine": machine(), "cases": cases}


def print_table(report: dict[str, Any]) -> None:
    print("\n| producers | sinks | producers open | RSS MiB | threads | fds | sockets "
          "| CPU % of a core | RSS KiB / sink | threads / sink |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in report["cases"]:
        print(f"| {c['mode']} | {c['sinks']} | {c['producers']} | {c['rss_kib'] / 1024:.1f} "
              f"| {c['threads']} | {c['fds']} | {c['sockets']} | {c['cpu_percent']:.2f} "
              f"| {c.get('rss_kib_per_sink', '-')} | {c.get('threads_per_sink', '-')} |")


def machine() -> dict[str, Any]:
    versions = {"confluent-kafka": metadata.version("confluent-kafka"),
                "librdkafka": str(confluent_kafka.libversion()[0])}
    return {"nproc": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": versions}


if __name__ == "__main__":
    sys.exit(main())
