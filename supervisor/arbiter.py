"""The supervisor's loop: spawn, reap, respawn, check heartbeats, reconcile.

Signal handlers only enqueue; the loop waits on child sentinels, the wake-up fd and the
control pipes. The supervisor holds no LMDB environment, no librdkafka client and no thread
but the log receiver, so ``fork`` is safe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from prometheus_client import multiprocess

from state.env import StateError
from supervisor.boot import Desired, read_desired, read_placeables
from supervisor.children import run_api, run_worker
from supervisor.desired import Moves, routed_changes
from supervisor.metrics import SupervisorMetrics, WorkerView
from supervisor.options import Options
from supervisor.placement import boot_placement
from supervisor.readiness import SlotFailure, StatusReporter, WorkerState, write_slot_report
from supervisor.reload import Reload, start_reload
from supervisor.stuck import StuckWorker
from supervisor.systemd import Notifier
from workers.backoff import Backoff

log = logging.getLogger(__name__)
CTX = multiprocessing.get_context("fork")
BOOT_FAILURES_REPORTED = 3  # consecutive deaths before the first heartbeat: the slot is failing
BOOT_GRACE_S = 5.0
HEALTHY_RUN_S = 30.0  # a child that booted and ran this long is respawned at once when it dies


def respawn_delay(backoff: Backoff, booted: bool, lived_s: float) -> float:
    """At once after a crash that ended a healthy run (its pipelines wait for nothing else),
    soon after a crash of a child that had booted, backing off on boot failures."""
    if booted:
        backoff.reset_after_success()
        if lived_s >= HEALTHY_RUN_S:
            return 0.0
    return backoff.next_delay()


@dataclass
class Child:
    """One worker slot (or the api) and the process currently filling it."""

    name: str
    slot: int | None
    process: Any = None
    conn: Connection | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.5, max_s=30.0))
    respawn_at: float | None = None
    started_at: float = 0.0
    started_wall: float = 0.0
    stuck: StuckWorker | None = None  # the signals sent to a stuck process
    restarts: int = 0
    boot_failures: int = 0  # consecutive exits before it booted
    failing_since: float | None = None  # unix time of the first of them
    last_exit_code: int | None = None
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # sent when it next starts


class Arbiter:
    """Keeps one api child and ``options.workers`` worker children alive."""

    def __init__(self, options: Options, pipelines: Desired) -> None:
        self.options = options
        self.pipelines = pipelines  # name -> (generation, desired status)
        self.placement = boot_placement(options.workers, read_placeables(options.data_dir))
        self.moves = Moves()  # assigns of moved pipelines, held until the old worker let go
        self.signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.heartbeats = CTX.Array("d", options.workers, lock=False)
        self.workers = [Child(f"worker-{slot}", slot) for slot in range(options.workers)]
        self.api = Child("api", None)
        self.stopping_deadline: float | None = None
        self.reload: Reload | None = None  # a config import running in its own process
        self.reload_again = False  # SIGHUP arrived while it ran
        self.metrics = SupervisorMetrics()
        self.notifier = Notifier.from_environ()  # before any fork: children must not notify
        self.status = StatusReporter(self.notifier, options.data_dir)

    # ---- signals -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self.handle_signal)

    def handle_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass

    # ---- main loop -----------------------------------------------------------------------

    def run(self) -> int:
        self.install_signal_handlers()
        self.write_slot_report()  # removes the report of an earlier run
        for child in self.children():
            self.spawn(child)
        log.info("supervisor started pipelines=%d workers=%d", len(self.pipelines),
                 len(self.workers))
        while True:
            self.wait_for_events()
            self.notifier.ping_watchdog(time.monotonic())
            if self.handle_signals():
                return 1
            self.finish_reload()
            self.reap_exited()
            self.handle_control()
            if self.stopping_deadline is not None:
                if self.all_exited() or time.monotonic() > self.stopping_deadline:
                    return self.finish_stop()
                continue
            self.respawn_due()
            self.check_heartbeats()
            self.check_boots()
            self.report_status(time.monotonic())
            self.update_metrics()

    def wait_for_events(self) -> None:
        ready: list[Any] = [self.wake_r]
        ready += [c.process.sentinel for c in self.children() if c.process is not None]
        ready += [c.conn for c in self.children() if c.conn is not None]
        ready += self.reload.waitables() if self.reload is not None else []
        wait(ready, timeout=self.next_timer_s())
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass

    def next_timer_s(self) -> float:
        """Sleep at most a second, less when a respawn or a watchdog ping is due sooner."""
        now = time.monotonic()
        due = [c.respawn_at - now for c in self.children() if c.respawn_at is not None]
        ping_in_s = self.notifier.next_ping_in_s(now)
        if ping_in_s is not None:
            due.append(ping_in_s)
        return max(0.0, min([1.0, *due]))

    def handle_signals(self) -> bool:
        """Returns True when the supervisor must exit now."""
        signals, self.signals = self.signals, []
        for signum in signals:
            if signum == signal.SIGCHLD:
                continue
            if self.stopping_deadline is not None:
                log.warning("second stop signal: exiting now")
                self.kill_all()
                return True
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.begin_stop()
            elif signum == signal.SIGHUP:
                self.reload_config()
        return False

    # ---- control: api requests, desired state, config reload -----------------------------

    def handle_control(self) -> None:
        """Answer the api's requests; note which pipelines workers have let go."""
        for child in self.children():
            while child.conn is not None and child.conn.poll():
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):
                    child.conn.close()
                    child.conn = None
                    break
                if child is self.api:
                    self.apply_request(message)
                    child.conn.send(("ok",))
                elif message[0] == "unassigned":
                    self.moves.unassigned(message[1])
        self.release_moves()

    def apply_request(self, message: tuple[Any, ...]) -> None:
        verb = message[0]
        log.debug("api request verb=%s args=%s", verb, message[1:])
        if verb == "pipeline":
            _, name, generation, desired = message
            self.apply_desired({**self.pipelines, name: (generation, desired)}, [name])
        elif verb == "deleted":
            self.apply_desired({n: d for n, d in self.pipelines.items() if n != message[1]}, [])
        elif verb == "log_level":
            logging.getLogger().setLevel(message[1].upper())
            log.info("log level changed level=%s", message[1])
            for child in self.workers:
                self.send(child, ("log_level", message[1]))

    def apply_desired(self, desired: Desired, changed: list[str] | None) -> None:
        """Place the pipelines (``changed`` ones read afresh from state, None: all) and tell
        their workers what changed; a pipeline whose pin changed moves to its new slot."""
        try:
            inputs = read_placeables(self.options.data_dir, changed)  # opens and closes state
        except StateError as exc:
            log.error("cannot read placement inputs; placing without them: %s", exc)
            inputs = {}
        for slot, message in routed_changes(self.pipelines, desired, self.placement, inputs,
                                            self.moves, self.worker_pids()):
            self.tell(self.workers[slot], message)
        self.pipelines = desired

    def release_moves(self) -> None:
        """Start each moved pipeline on its new worker once its old worker has drained it."""
        if self.stopping_deadline is not None or not self.moves.held:
            return
        for slot, message in self.moves.released(self.worker_pids(), self.placement):
            self.tell(self.workers[slot], message)

    def worker_pids(self) -> list[int | None]:
        return [None if c.process is None else c.process.pid for c in self.workers]

    def tell(self, child: Child, message: tuple[Any, ...]) -> None:
        """Send to a worker; a deletion waits for a worker that is down."""
        if not self.send(child, message) and message[-1] == "deleted":
            child.pending.append(message)

    def send(self, child: Child, message: tuple[Any, ...]) -> bool:
        if child.conn is None:
            return False
        try:
            child.conn.send(message)
            return True
        except OSError:
            return False

    def reload_config(self) -> None:
        """SIGHUP: import --config again with the boot rules, in a child process (see
        ``supervisor.reload``); ``finish_reload`` tells workers what changed."""
        if self.options.config is None:
            log.info("SIGHUP received; no --config to reload")
            return
        if self.reload is not None:
            self.reload_again = True
            log.info("SIGHUP received during a reload; another follows it")
            return
        self.status.reloading()
        try:
            self.reload = start_reload(self.options.config, self.options.data_dir)
        except OSError as exc:
            log.error("config reload failed, nothing changed: cannot start it: %s", exc)
            self.status.reloaded()

    def finish_reload(self) -> None:
        """Once the reload child has answered: apply the desired state it stored."""
        if self.reload is None or (error := self.reload.outcome()) is None:
            return
        self.reload = None
        if self.stopping_deadline is not None:
            return
        if error:
            log.error("config reload failed, nothing changed: %s", error)
        else:
            self.apply_reloaded()
        self.status.reloaded()
        if self.reload_again:
            self.reload_again = False
            self.reload_config()

    def apply_reloaded(self) -> None:
        try:
            desired = read_desired(self.options.data_dir)
        except StateError as exc:
            log.error("config reloaded, but the desired state cannot be read: %s", exc)
            return
        changed = sum(1 for name in desired.keys() | self.pipelines.keys()
                      if desired.get(name) != self.pipelines.get(name))
        self.apply_desired(desired, None)
        log.info("config reloaded pipelines=%d changed=%d", len(desired), changed)

    # ---- children ------------------------------------------------------------------------

    def children(self) -> list[Child]:
        return [self.api, *self.workers]

    def spawn(self, child: Child) -> None:
        """Start the child's process; a fork that fails counts as a failed boot."""
        try:
            if child.slot is None:
                self.spawn_api()
            else:
                self.spawn_worker(child)
        except OSError as exc:
            if child.process is not None:
                return  # it started and died at once: reaped and counted like any exit
            log.error("cannot start child name=%s: %s", child.name, exc)
            self.schedule_respawn(child, None, booted=False)

    def spawn_api(self) -> None:
        parent_conn, child_conn = CTX.Pipe()
        self.start_child(self.api, run_api,
                         (self.options.api_addr, self.options.data_dir, child_conn))
        child_conn.close()
        self.api.conn = parent_conn

    def spawn_worker(self, child: Child) -> None:
        parent_conn, child_conn = CTX.Pipe()
        assert child.slot is not None
        self.heartbeats[child.slot] = time.time()
        self.start_child(child, run_worker,
                         (child.slot, child_conn, self.options.data_dir, self.heartbeats,
                          self.options.stream_sharing, self.options.worker_nice))
        child_conn.close()
        child.conn = parent_conn
        pending, child.pending = child.pending, []
        for message in pending:
            parent_conn.send(message)
        for name, (generation, desired) in sorted(self.pipelines.items()):
            if (desired == "running" and self.placement.slot_of(name) == child.slot
                    and name not in self.moves):
                parent_conn.send(("assign", name, generation))

    def start_child(self, child: Child, target: Any, args: tuple[Any, ...]) -> None:
        process = CTX.Process(target=target, args=args, name=child.name, daemon=False)
        process.start()  # OSError when fork fails (process or memory limits)
        child.process = process
        child.started_at = time.monotonic()
        child.started_wall = time.time()
        child.stuck = None
        log.info("child started name=%s pid=%d", child.name, child.process.pid)

    def reap_exited(self) -> None:
        for child in self.children():
            process = child.process
            if process is None or process.is_alive():
                continue
            process.join()
            code = process.exitcode
            child.process = None
            if child.conn is not None:
                child.conn.close()
                child.conn = None
            multiprocess.mark_process_dead(child.name)
            if self.stopping_deadline is None:
                lived_s = time.monotonic() - child.started_at
                log.warning("child exited name=%s code=%s lived_s=%.1f", child.name, code, lived_s)
                self.schedule_respawn(child, code, self.booted(child, lived_s), lived_s)

    def schedule_respawn(self, child: Child, code: int | None, booted: bool,
                         lived_s: float = 0.0) -> None:
        if not booted:
            child.boot_failures += 1
            child.failing_since = child.failing_since or time.time()
        child.last_exit_code = code
        delay = respawn_delay(child.backoff, booted, lived_s)
        child.respawn_at = time.monotonic() + delay
        child.restarts += 1
        self.metrics.restarted(child.name)
        log.info("child respawn scheduled name=%s restarts=%d respawn_in_s=%.1f",
                 child.name, child.restarts, delay)
        if child.boot_failures >= BOOT_FAILURES_REPORTED:
            log.error("%s cannot boot: died %d times in a row before it was up (last exit code "
                      "%s); next attempt in %.0fs, reported in /health", child.name,
                      child.boot_failures, code, delay)
            self.write_slot_report()

    def check_boots(self) -> None:
        """A child that failed to boot is fine again once its new process is up."""
        for child in self.children():
            if not child.boot_failures or child.process is None:
                continue
            if self.booted(child, time.monotonic() - child.started_at):
                log.info("child booted after failures name=%s boot_failures=%d", child.name,
                         child.boot_failures)
                reported = child.boot_failures >= BOOT_FAILURES_REPORTED
                child.boot_failures, child.failing_since = 0, None
                if reported:
                    self.write_slot_report()

    def failing(self) -> list[Child]:
        return [c for c in self.children() if c.boot_failures >= BOOT_FAILURES_REPORTED]

    def write_slot_report(self) -> None:
        failures = [SlotFailure(c.name, c.boot_failures, c.last_exit_code, c.failing_since or 0.0)
                    for c in self.failing() if c.slot is not None]
        try:
            write_slot_report(self.options.data_dir, failures)
        except OSError as exc:
            log.error("cannot write the worker slot report for /health: %s", exc)

    def booted(self, child: Child, lived_s: float) -> bool:
        """A worker booted once its data loop stamped a heartbeat; the api after a few seconds."""
        if child.slot is None:
            return lived_s > BOOT_GRACE_S
        return bool(self.heartbeats[child.slot] > child.started_wall)

    def respawn_due(self) -> None:
        now = time.monotonic()
        for child in self.children():
            if child.process is None and child.respawn_at is not None and now >= child.respawn_at:
                child.respawn_at = None
                self.spawn(child)

    def check_heartbeats(self) -> None:
        """A worker whose data loop went silent is sent signals until it exits: its stacks go
        to the log first (see ``supervisor.stuck``)."""
        now_wall, now = time.time(), time.monotonic()
        for child in self.workers:
            if child.process is None or child.slot is None:
                continue
            if child.stuck is None:
                age_s = now_wall - self.heartbeats[child.slot]
                if age_s <= self.options.heartbeat_timeout_s:
                    continue
                log.error("worker stuck name=%s heartbeat_age_s=%.1f; sending SIGQUIT for stacks",
                          child.name, age_s)
                child.stuck = StuckWorker(child.process.pid)
                child.stuck.step(now)
                continue
            sent = child.stuck.step(now)
            if sent is not None:
                log.error("stuck worker did not exit; sending %s name=%s", sent.name, child.name)

    def report_status(self, now: float) -> None:
        """READY=1 and STATUS= for systemd, every few seconds (see StatusReporter)."""
        if self.status.due(now):
            workers = [WorkerState(c.name, c.process.pid if c.process else None, self.is_up(c))
                       for c in self.workers]
            self.status.report(now, workers, [c.name for c in self.failing()])

    def is_up(self, child: Child) -> bool:
        return child.process is not None and self.booted(child, time.monotonic() - child.started_at)

    def update_metrics(self) -> None:
        views = [WorkerView(c.name, c.process is not None, self.heartbeats[c.slot or 0])
                 for c in self.workers]
        slots = [self.placement.slot_of(name) for name, (_, desired) in self.pipelines.items()
                 if desired == "running"]
        self.metrics.update(views, [slot for slot in slots if slot is not None])

    # ---- stopping ------------------------------------------------------------------------

    def begin_stop(self) -> None:
        timeout_s = self.options.drain_timeout_s
        log.info("draining drain_timeout_s=%.0f", timeout_s)
        self.notifier.stopping()
        self.stopping_deadline = time.monotonic() + timeout_s + 5.0
        for child in self.workers:
            if child.conn is not None:
                try:
                    child.conn.send(("shutdown", timeout_s))
                except OSError:
                    pass
        if self.api.process is not None:
            os.kill(self.api.process.pid, signal.SIGTERM)

    def all_exited(self) -> bool:
        return all(child.process is None for child in self.children())

    def finish_stop(self) -> int:
        self.end_reload()
        leftover = [c.name for c in self.children() if c.process is not None]
        if leftover:
            log.error("children did not drain in time; killing names=%s", ",".join(leftover))
            self.kill_all()
            return 1
        log.info("stopped cleanly")
        return 0

    def end_reload(self) -> None:
        """Stopping: a reload still running is killed (its write is all or nothing); boot
        imports the files again."""
        if self.reload is not None:
            self.reload.end(grace_s=0.0)
            self.reload = None

    def kill_all(self) -> None:
        self.end_reload()
        for child in self.children():
            if child.process is not None and child.process.pid:
                try:
                    os.kill(child.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.process.join(5)

