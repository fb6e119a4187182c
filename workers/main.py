"""A worker process: hosts the pipelines the supervisor assigns to its slot.

The data loop is single-threaded: it steps every pipeline, stamps the heartbeat and sleeps on
the control pipe and a wake-up fd (set by source threads when rows arrive).
"""

from __future__ import annotations

import faulthandler
import logging
import math
import os
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from state.env import open_state
from state.spec import SpecError, decode_spec
from state.stores import SEP, CheckpointStore, SpecStore
from state.writer import GroupCommitWriter
from workers.metrics import use_process_identity
from workers.runner import PipelineRunner
from workers.sinks.producers import process_pool
from workers.source.shared import StreamRegistry
from workers.waker import ReadyPipelines, Waker

log = logging.getLogger(__name__)
MAX_SLEEP_S = 0.5
REPORT_POLL_S = 0.005  # while Kafka owes delivery reports, the loop polls this often
METRICS_REPORT_INTERVAL_S = 1.0


class Worker:
    """The worker's loop: control messages, pipeline steps, heartbeat, sleep."""

    def __init__(self, slot: int, conn: Connection, data_dir: Path, heartbeats: Any,
                 streams: StreamRegistry) -> None:
        self.slot = slot
        self.streams = streams
        self.metrics_reported_at = 0.0
        self.conn = conn
        self.data_dir = data_dir
        self.heartbeats = heartbeats
        self.parent_pid = os.getppid()
        self.waker = Waker()
        self.ready = ReadyPipelines(self.waker)
        self.due_at: dict[str, float] = {}  # when each pipeline's own timer is next due
        self.signals: list[int] = []
        self.runners: dict[str, PipelineRunner] = {}
        self.drain_timeout_s = 30.0
        self.stopping = False

    def run(self) -> int:
        self.install_signal_handlers()
        use_process_identity(f"worker-{self.slot}")
        self.state = open_state(self.data_dir)
        self.producers = process_pool()
        self.outstanding = 0
        self.specs = SpecStore(self.state)
        self.checkpoints = CheckpointStore(self.state)
        self.writer = GroupCommitWriter(self.state)
        log.info("worker started slot=%d pid=%d", self.slot, os.getpid())
        while not self.stopping:
            self.handle_signals()
            self.handle_control()
            self.outstanding = self.producers.poll()
            self.step_pipelines()
            self.report_metrics()
            self.stamp_heartbeat()
            self.sleep()
        self.drain()
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, dump_stacks_and_abort)

    def handle_term(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        self.waker.set()

    def handle_signals(self) -> None:
        if not self.signals:
            return
        if self.stopping or len(self.signals) > 1:
            log.warning("worker exiting now slot=%d", self.slot)
            os._exit(1)
        self.signals.clear()
        self.stopping = True

    def handle_control(self) -> None:
        if os.getppid() != self.parent_pid:
            log.error("supervisor is gone; worker exiting slot=%d", self.slot)
            self.stopping = True
            return
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                self.stopping = True
                return
            self.apply(message)

    def apply(self, message: tuple[Any, ...]) -> None:
        verb = message[0]
        log.debug("control message slot=%d verb=%s args=%s", self.slot, verb, message[1:])
        if verb == "assign":
            self.assign(message[1], message[2])
        elif verb == "unassign":
            self.unassign(message[1], message[2] if len(message) > 2 else "stopped")
        elif verb == "log_level":
            logging.getLogger().setLevel(str(message[1]).upper())
        elif verb == "shutdown":
            self.drain_timeout_s = float(message[1])
            self.stopping = True

    def assign(self, name: str, generation: int) -> None:
        current = self.runners.get(name)
        if current is not None and current.generation == generation:
            return
        if current is not None:
            self.unassign(name, "stopped")
        record = self.specs.get(name)
        if record is None:
            log.error("assigned pipeline has no spec pipeline=%s", name)
            return
        try:
            spec = decode_spec(record.spec)
        except SpecError as exc:
            log.error("stored spec is invalid pipeline=%s error=%s", name, exc)
            return
        self.forget_removed_sinks(name, set(spec.sink_ids()))
        runner = PipelineRunner(spec, generation, self.slot, self.checkpoints, self.writer,
                                self.ready.waker_for(name), self.streams)
        self.runners[name] = runner
        self.due_at[name] = 0.0
        runner.begin_start()

    def unassign(self, name: str, final: str) -> None:
        """Drain the pipeline to ``final`` (paused, stopped); ``deleted`` also removes its
        status, checkpoints and schemas once the drain has written its last records."""
        runner = self.runners.pop(name, None)
        self.due_at.pop(name, None)
        if runner is not None:
            final_status = "stopped" if final == "deleted" else final
            runner.drain(time.monotonic() + self.drain_timeout_s,
                         final_status,  # type: ignore[arg-type]
                         keepalive=self.stamp_heartbeat)
            log.info("pipeline unassigned pipeline=%s final=%s", name, final)
        if final == "deleted":
            self.writer.delete("status", name)
            for db_name in ("checkpoints", "schemas", "dlq"):
                self.writer.delete_prefix(db_name, name + SEP)
            log.info("pipeline state deleted pipeline=%s", name)
        self.writer.flush()
        self.report(("unassigned", name))  # its last records are written: another may start it

    def report(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            self.stopping = True  # the supervisor is gone

    def forget_removed_sinks(self, name: str, sink_ids: set[str]) -> None:
        """Checkpoints of sinks no longer in the spec (removed by PATCH) are deleted."""
        stale = set(self.checkpoints.for_pipeline(name)) - sink_ids
        for sink_id in sorted(stale):
            self.writer.delete("checkpoints", CheckpointStore.key(name, sink_id))
            log.info("checkpoint of removed sink deleted pipeline=%s sink=%s", name, sink_id)
        if stale:
            self.writer.flush()

    def step_pipelines(self) -> None:
        """Step the pipelines that have work (woken by their source, starter or catch-up) or
        whose own timer is due (batch deadline, acks to poll, retry); not all of them."""
        self.waker.clear()
        now = time.monotonic()
        ready = self.ready.take()
        for name, runner in self.runners.items():
            if name in ready or now >= self.due_at[name]:
                runner.step(now)
                self.due_at[name] = now + runner.next_wakeup_s(now)

    def report_metrics(self) -> None:
        """Once a second: the streams' series, and what pipelines gathered in their metric
        buffers (a pipeline that went idle sends no batch that would flush its own)."""
        now = time.time()
        if now - self.metrics_reported_at >= METRICS_REPORT_INTERVAL_S:
            self.metrics_reported_at = now
            self.streams.report_metrics(now)
            monotonic = time.monotonic()
            for runner in self.runners.values():
                runner.metrics.flush_if_due(monotonic)

    def stamp_heartbeat(self) -> None:
        self.heartbeats[self.slot] = time.time()

    def sleep(self) -> None:
        next_due = min(self.due_at.values(), default=math.inf)
        timeout = min(MAX_SLEEP_S, next_due - time.monotonic(),
                      REPORT_POLL_S if self.outstanding else MAX_SLEEP_S)
        if timeout > 0:
            wait([self.conn, self.waker.fileno()], timeout)

    def drain(self) -> None:
        """Graceful stop: every pipeline delivers whole transactions and checkpoints."""
        deadline = time.monotonic() + self.drain_timeout_s
        log.info("worker draining slot=%d pipelines=%d", self.slot, len(self.runners))
        for runner in self.runners.values():
            runner.drain(deadline, keepalive=self.stamp_heartbeat)
        self.writer.close()
        self.state.close()
        log.info("worker stopped slot=%d", self.slot)


def dump_stacks_and_abort(signum: int, frame: object) -> None:
    """SIGQUIT from the supervisor, whose heartbeat check found this worker stuck: every
    thread's stack to stderr, then death by SIGABRT. Python runs this handler on the main
    thread, holding the GIL, so no other thread moves its frames while they are written (unlike
    faulthandler's dump from inside a SIGABRT, see ``supervisor.stuck``). Plain writes to fd 2:
    the interrupted code may hold the lock of ``sys.stderr``."""
    os.write(2, f"Stuck worker pid={os.getpid()}: thread stacks (SIGQUIT)\n".encode())
    faulthandler.dump_traceback(file=2, all_threads=True)
    faulthandler.disable()  # the abort below is not to dump them a second time
    os.abort()


def worker_main(slot: int, conn: Connection, data_dir: Path, heartbeats: Any,
                stream_sharing: bool, nice: int = 0) -> None:
    """Entry point of a forked worker process; ``nice`` lowers its CPU priority (before any
    thread starts: on Linux each thread has its own, inherited from the one that starts it)."""
    faulthandler.enable(file=sys.stderr, all_threads=True)  # crashes, and SIGABRT: stacks
    if nice:
        os.nice(nice)
    code = 1
    try:
        code = Worker(slot, conn, data_dir, heartbeats, StreamRegistry(slot, stream_sharing)).run()
    except Exception:
        log.exception("worker crashed slot=%d", slot)
    finally:
        logging.shutdown()
    raise SystemExit(code)
