"""Supervision with the real CLI and real signals: systemd notifications (READY, STATUS,
WATCHDOG, RELOADING, STOPPING), a stuck worker (kill -STOP), SIGTERM while batches are open,
SIGHUP with an edited config directory, and a worker slot that cannot boot.

kill -9 of a worker is covered by tests/test_chaos_worker.py and tests/test_crash_recovery.py.
"""

from __future__ import annotations

import array
import contextlib
import os
import re
import resource
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from deploy.local.processes import child_pids, is_zombie, wait_until
from state.env import MAX_READERS, SUB_DATABASES, StateEnv, open_state
from state.records import DesiredStatus, PipelineRecord, StatusRecord
from state.stores import StatusStore
from supervisor.arbiter import HEALTHY_RUN_S, respawn_delay
from supervisor.readiness import (
    PipelineCounts,
    StatusReporter,
    WorkerState,
    boot_missing,
    count_pipelines,
    status_line,
)
from supervisor.systemd import Notifier
from tests.support.chaos import (
    AT_LEAST_ONCE,
    ChangeWriter,
    assert_delivered,
    committed_rows,
    create_table,
    read_checkpoint,
    read_delivery,
)
from tests.support.forks import forked, holding_the_writer_lock
from tests.support.kafka_read import read_topic
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service, free_port
from workers.backoff import Backoff

UCRED = array.array("i", [0, 0, 0]).itemsize * 3  # struct ucred: pid, uid, gid


class NotifyListener(threading.Thread):
    """Stands in for systemd's notify socket: an AF_UNIX datagram socket that keeps every
    message with the pid of its sender (SCM_CREDENTIALS), as systemd checks NotifyAccess."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="notify-listener")
        self.directory = tempfile.mkdtemp(prefix="df-notify-")  # short: sun_path is 108 bytes
        self.path = os.path.join(self.directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, dict[str, str]]] = []  # (sender pid, fields)
        self.lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:UCRED])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.lock:
                self.messages.append((pid, fields))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.directory)

    def received(self) -> list[dict[str, str]]:
        with self.lock:
            return [fields for _, fields in self.messages]

    def senders(self) -> set[int]:
        with self.lock:
            return {pid for pid, _ in self.messages}

    def count(self, key: str) -> int:
        return sum(1 for fields in self.received() if key in fields)

    def wait_for(self, service: Service, key: str, after: int = 0,
                 check: Callable[[dict[str, str]], bool] = lambda _: True,
                 timeout_s: float = 60.0) -> dict[str, str]:
        """The first message with ``key`` (among those after the first ``after``) that
        passes ``check``; waits while the service runs (and briefly once it has exited)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [m for m in self.received()[after:] if key in m and check(m)]
            if found:
                return found[0]
            exited = service.process is not None and service.process.poll() is not None
            if exited:
                deadline = min(deadline, time.monotonic() + 1.0)
            time.sleep(0.1)
        raise AssertionError(f"no {key} from the supervisor; last messages: "
                             f"{self.received()[after:][-5:]}\n{service.log()}")


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A listener whose path the service gets as NOTIFY_SOCKET, with a 2 s watchdog."""
    listener = NotifyListener()
    listener.start()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    try:
        yield listener
    finally:
        listener.stop()


def read_status(data_dir: Path, pipeline: str) -> StatusRecord | None:
    """The pipeline's status record, read from LMDB without opening it for writing."""
    env = lmdb.open(str(data_dir / "state"), readonly=True, max_dbs=len(SUB_DATABASES) + 2,
                    max_readers=MAX_READERS)
    try:
        return StatusStore(StateEnv(env)).get(pipeline)
    finally:
        env.close()


def unreachable(name: str) -> dict[str, Any]:
    port = free_port()
    return pipeline_yaml(name, f"mysql://u:pw@127.0.0.1:{port}/", f"127.0.0.1:{port}",
                         ["db.t"], "t")


def child_pid(service: Service, name: str) -> int:
    """The pid of the process now filling ``name`` (worker-N), from the supervisor's log."""
    pattern = rf"child started name={name} pid=(\d+)"
    service.wait_until(lambda: re.search(pattern, service.log(None)), 60, f"{name} started")
    return int(re.findall(pattern, service.log(None))[-1])


def gone(pid: int) -> bool:
    return is_zombie(pid)  # also True once the pid no longer exists


# ---- pure logic ----------------------------------------------------------------------------


def test_notifier_takes_the_variables_out_and_pings_only_for_its_own_pid() -> None:
    env = {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42", "X": "1"}
    notifier = Notifier.from_environ(env, pid=42)
    assert env == {"X": "1"}  # children forked later do not inherit them
    assert notifier.address == "\0sd" and notifier.watchdog_interval_s == 15.0
    other = Notifier.from_environ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000",
                                   "WATCHDOG_PID": "7"}, pid=42)
    assert other.watchdog_interval_s is None  # the watchdog is meant for another process
    assert Notifier.from_environ({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "0"}
                                 ).watchdog_interval_s is None


def test_counts_ignore_status_written_by_a_process_that_is_gone() -> None:
    desired: list[tuple[str, DesiredStatus]] = [("a", "running"), ("b", "running"),
                                                ("c", "running"), ("d", "paused"),
                                                ("e", "running")]
    specs = {n: PipelineRecord(n, {}, desired=d, generation=2) for n, d in desired}
    statuses = {"a": StatusRecord("a", "running", worker_pid=10, generation=2),
                "b": StatusRecord("b", "failed", worker_pid=11, generation=2),
                "c": StatusRecord("c", "running", worker_pid=99, generation=2),  # old worker
                "e": StatusRecord("e", "running", worker_pid=10, generation=1)}  # old spec
    counts = count_pipelines(specs, statuses, live_pids={10, 11})
    assert counts == PipelineCounts(total=5, running=1, failed=1, pending=2, inactive=1)
    assert boot_missing(["worker-1"], counts) == ["worker-1 not booted",
                                                  "2 of 5 pipelines not picked up"]
    assert boot_missing([], PipelineCounts(3, 2, 1)) == []
    assert status_line(counts, 1, 2, ["worker-1"]) == (
        "5 pipelines: 1 running, 1 failed, 2 pending, 1 paused/stopped; 1/2 workers up; "
        "failing to boot: worker-1")


def test_ready_after_the_boot_wait_says_what_is_missing(tmp_path: Path) -> None:
    """A real notify socket and a real (empty) state directory; the wait is 0 s."""
    open_state(tmp_path).close()  # created at boot, before the supervisor's first report
    listener = NotifyListener()
    listener.start()
    try:
        reporter = StatusReporter(Notifier(listener.path, None), tmp_path, ready_timeout_s=0.0)
        reporter.report(time.monotonic() + 1, [WorkerState("worker-0", 1234, up=True),
                                               WorkerState("worker-1", None, up=False)],
                        failing=["worker-1"])
        deadline = time.monotonic() + 10
        while not listener.received() and time.monotonic() < deadline:
            time.sleep(0.05)
        [message] = listener.received()
        assert message["READY"] == "1"
        assert message["STATUS"] == ("0 pipelines: 0 running, 0 failed, 0 pending; 1/2 workers "
                                     "up; failing to boot: worker-1; ready after 0s without: "
                                     "worker-1 not booted")
    finally:
        listener.stop()


# ---- the real service ----------------------------------------------------------------------


@pytest.mark.services
def test_systemd_notifications_from_the_supervisor(
        mariadb: Any, kafka: Any, tmp_path: Path, notify_socket: NotifyListener) -> None:
    """READY=1 only once every pipeline is picked up, STATUS with counts, WATCHDOG=1 from the
    loop (none while the supervisor is stopped), RELOADING=1/READY=1 around SIGHUP, STOPPING=1
    on SIGTERM; every message comes from the supervisor itself (NotifyAccess=main)."""
    db = unique("notify")
    topic = create_table(mariadb, kafka, db)
    good = pipeline_yaml("good", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], topic)
    service = Service(write_config(tmp_path / "config", good, unreachable("broken")),
                      tmp_path / "data", workers=2)
    try:
        service.start(wait_ready=False)
        assert service.process is not None
        ready = notify_socket.wait_for(service, "READY")
        assert service.get("/ready").status_code == 200  # nothing was pending at READY=1
        assert re.fullmatch(r"2 pipelines: \d running, \d failed, 0 pending; 2/2 workers up",
                            ready["STATUS"]), ready
        notify_socket.wait_for(service, "STATUS", check=lambda m: m["STATUS"].startswith(
            "2 pipelines: 1 running, 1 failed, 0 pending; 2/2 workers up"))
        # Workers run nicer (--worker-nice 5) than the supervisor, which answers the watchdog.
        supervisor_nice = os.getpriority(os.PRIO_PROCESS, service.process.pid)
        assert os.getpriority(os.PRIO_PROCESS, service.worker_pid("good")) == supervisor_nice + 5

        pings = notify_socket.count("WATCHDOG")
        service.wait_until(lambda: notify_socket.count("WATCHDOG") >= pings + 3, 30, "pings")
        os.kill(service.process.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)  # a datagram sent just before the stop is delivered by now
            pings = notify_socket.count("WATCHDOG")
            time.sleep(3)  # a watchdog of 2 s would fire here
            assert notify_socket.count("WATCHDOG") == pings, "pings from a stopped supervisor"
        finally:
            os.kill(service.process.pid, signal.SIGCONT)
        service.wait_until(lambda: notify_socket.count("WATCHDOG") > pings, 30, "pings again")

        seen = len(notify_socket.received())
        service.send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for(service, "RELOADING", after=seen)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify_socket.wait_for(service, "READY", after=seen)

        seen = len(notify_socket.received())
        assert service.stop(timeout_s=60) == 0
        notify_socket.wait_for(service, "STOPPING", after=seen, timeout_s=5)
        assert notify_socket.senders() == {service.process.pid}
    finally:
        service.close()


@pytest.mark.services
def test_stuck_worker_dumps_its_stacks_is_replaced_and_nothing_is_lost(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    """kill -STOP of the worker under a steady load: after --heartbeat-timeout-s it gets SIGQUIT
    (and SIGCONT); its handler writes every thread's stack into the log and it dies of SIGABRT,
    with no second dump from faulthandler; a new worker runs the pipeline from its checkpoint
    and Kafka holds every committed change."""
    db = unique("stuck")
    topic = create_table(mariadb, kafka, db)
    spec = pipeline_yaml("p", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], topic,
                         max_events=50)
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=1,
                      extra_args=["--heartbeat-timeout-s", "5"])
    writer = ChangeWriter(lambda: mariadb.connect(db))
    try:
        service.start()
        service.wait_running("p")
        writer.start()
        service.wait_until(lambda: service.pipeline("p")["ops"]["events_total"] > 100, 60,
                           "changes flowing")
        victim = service.worker_pid("p")
        os.kill(victim, signal.SIGSTOP)
        try:
            service.wait_until(lambda: "child exited name=worker-0 code=-6" in service.log(None),
                               60, "the stuck worker to dump its stacks and abort")
        except AssertionError:
            dump_supervisor_stacks(service)
            raise
        checkpoint = read_checkpoint(service.data_dir)
        assert checkpoint is not None
        log = service.log(None)
        assert "worker stuck name=worker-0" in log
        assert f"Stuck worker pid={victim}: thread stacks (SIGQUIT)" in log, log[-6000:]
        assert re.search(r'File ".*workers/main\.py", line \d+ in run', log), log[-6000:]
        assert "Fatal Python error" not in log, log[-6000:]  # SIGQUIT was enough

        service.wait_until(lambda: service.status("p") == "running"
                           and service.worker_pid("p") != victim, 60, "a new worker running p")
        written = writer.transactions
        service.wait_until(lambda: writer.transactions > written + 50, 60, "more changes")
        writer.stop()
        expected = committed_rows(mariadb, db)
        records = read_delivery(kafka.bootstrap, topic, AT_LEAST_ONCE, writer, expected)
        assert_delivered(records, writer, expected, AT_LEAST_ONCE, [checkpoint])
    finally:
        writer.stop()
        service.close()


def dump_supervisor_stacks(service: Service) -> None:
    """Evidence when the stuck worker is not replaced as expected: the supervisor's own stacks,
    from faulthandler on SIGABRT, printed with the log's end. Causes found this way: the
    worker crashed inside faulthandler's SIGABRT dump (code -11, before workers had their own
    SIGQUIT handler); the supervisor hung opening state behind the stopped worker's LMDB
    write transaction (see tests/test_state_locks.py)."""
    assert service.process is not None
    os.kill(service.process.pid, signal.SIGABRT)
    time.sleep(2)
    print(service.log(None)[-8000:])


@pytest.mark.services
def test_sigterm_with_open_batches_drains_and_a_restart_loses_nothing(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    """Two pipelines under a steady load with 3 s batches, so the SIGTERM finds events waiting
    in open batches: the service exits 0 within the drain timeout; after a restart Kafka holds
    every committed change exactly once (a clean drain leaves nothing to replay)."""
    dbs = [unique("drain_a"), unique("drain_b")]
    topics = [create_table(mariadb, kafka, db) for db in dbs]
    specs = [pipeline_yaml(f"p{i}", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], topic,
                           max_events=100_000, max_ms=3000)
             for i, (db, topic) in enumerate(zip(dbs, topics, strict=True))]
    service = Service(write_config(tmp_path / "config", *specs), tmp_path / "data", workers=2)
    writers = [ChangeWriter(lambda db=db: mariadb.connect(db)) for db in dbs]  # type: ignore[misc]
    try:
        service.start()
        for writer in writers:
            writer.start()
        service.wait_until(lambda: all(service.pipeline(f"p{i}")["ops"]["events_total"] > 50
                                       for i in range(2)), 60, "changes flowing")
        assert service.process is not None
        service.send_signal(signal.SIGTERM)
        assert service.process.wait(20 + 15) == 0  # 0: every child drained in time
        assert "stopped cleanly" in service.log(None)  # the supervisor's last words are kept
        time.sleep(1)  # the writers carry on while the service is down
        service.start()
        for writer in writers:
            writer.stop()
        for db, topic, writer in zip(dbs, topics, writers, strict=True):
            expected = committed_rows(mariadb, db)
            records = read_delivery(kafka.bootstrap, topic, AT_LEAST_ONCE, writer, expected)
            assert_delivered(records, writer, expected, AT_LEAST_ONCE, checkpoints=[])
    finally:
        for writer in writers:
            writer.stop()
        service.close()


def insert(mariadb: Any, db: str, ids: range) -> None:
    with mariadb.connect(db) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO t (id, v) VALUES (%s, %s)", [(i, f"v{i}") for i in ids])


def ids_in(kafka: Any, topic: str, expect: int) -> set[int]:
    return {r.value["after"]["id"] for r in read_topic(kafka.bootstrap, topic, expect)}


@pytest.mark.services
def test_sighup_applies_an_edited_config_directory_and_leaves_the_rest_alone(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    """One file added, one changed (new topic), one deleted: the added pipeline runs, the
    changed one restarts with its new spec, the deleted one is gone, and the unchanged one
    keeps its run (started_at, restarts, generation) and its worker process."""
    names = ["keep", "change", "gone", "added"]
    dbs = {name: unique(f"hup_{name}") for name in names}
    topics = {name: create_table(mariadb, kafka, db) for name, db in dbs.items()}
    kafka.create_topic(f"{dbs['change']}.moved", partitions=3)

    def spec(name: str, topic: str | None = None) -> dict[str, Any]:
        return pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{dbs[name]}.t"],
                             topic or topics[name])

    config = write_config(tmp_path / "config", spec("keep"), spec("change"), spec("gone"))
    service = Service(config, tmp_path / "data", workers=2)
    try:
        service.start()
        for name in ("keep", "change", "gone"):
            service.wait_running(name)
        keep_before = read_status(service.data_dir, "keep")
        change_before = service.pipeline("change")["ops"]
        assert keep_before is not None and keep_before.started_at is not None

        write_config(config, spec("added"), spec("change", f"{dbs['change']}.moved"))
        (config / "gone.yaml").unlink()
        service.send_signal(signal.SIGHUP)
        service.wait_running("added")
        service.wait_until(lambda: service.status("change") == "running" and service.pipeline(
            "change")["ops"]["generation"] == change_before["generation"] + 1, 60, "change")
        service.wait_until(lambda: service.get("/pipelines/gone").status_code == 404, 30,
                           "gone removed")

        keep_after = read_status(service.data_dir, "keep")
        assert keep_after is not None
        assert (keep_after.status, keep_after.started_at, keep_after.restarts,
                keep_after.generation, keep_after.worker_pid) == (
            "running", keep_before.started_at, keep_before.restarts, keep_before.generation,
            keep_before.worker_pid)
        assert not gone(keep_before.worker_pid or 0)
        log = service.log(None)
        assert "pipeline unassigned pipeline=keep" not in log
        assert "pipeline unassigned pipeline=change" in log
        assert "pipeline unassigned pipeline=gone final=deleted" in log

        for name in ("keep", "change", "added"):
            insert(mariadb, dbs[name], range(1, 4))
        assert ids_in(kafka, topics["keep"], 3) == {1, 2, 3}
        assert ids_in(kafka, f"{dbs['change']}.moved", 3) == {1, 2, 3}
        assert ids_in(kafka, topics["added"], 3) == {1, 2, 3}
    finally:
        service.close()


@pytest.mark.services
def test_a_reload_waiting_for_lmdbs_writer_lock_leaves_the_supervisor_running(
        mariadb: Any, kafka: Any, tmp_path: Path, children: list[int]) -> None:
    """SIGHUP while a stopped process holds LMDB's writer lock, as a stuck worker can: the
    import waits in a process of its own, and the supervisor goes on reaping and restarting
    workers (it is what kills a stuck worker, which frees the lock). A second SIGHUP meanwhile
    reloads once more after the first. The edit applies once the lock is free."""
    db = unique("hup_lock")
    topic = create_table(mariadb, kafka, db)

    def spec(name: str) -> dict[str, Any]:
        return pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], topic)

    config = write_config(tmp_path / "config", spec("first"))
    service = Service(config, tmp_path / "data", workers=1)
    try:
        service.start()
        service.wait_running("first")
        victim = service.worker_pid("first")
        holder = forked(lambda: None, holding_the_writer_lock(service.data_dir))
        children.append(holder)
        os.kill(holder, signal.SIGSTOP)
        write_config(config, spec("added"))
        service.send_signal(signal.SIGHUP)
        os.kill(victim, signal.SIGKILL)
        service.wait_until(lambda: "child exited name=worker-0 code=-9" in service.log(None),
                           30, "the supervisor to reap the killed worker")
        service.send_signal(signal.SIGHUP)
        service.wait_until(lambda: "SIGHUP received during a reload" in service.log(None), 30,
                           "the second SIGHUP")
        assert "config reloaded" not in service.log(None)

        os.kill(holder, signal.SIGKILL)
        service.wait_running("added")
        service.wait_running("first")
        service.wait_until(lambda: service.log(None).count("config reloaded") == 2, 30,
                           "both reloads")
    finally:
        service.close()


@pytest.mark.services
def test_the_api_and_the_workers_exit_when_the_supervisor_is_killed(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    """kill -9 of the supervisor alone, with no systemd to end the rest of the service: the
    api and the workers notice and exit, so none is left holding the port, LMDB or a binlog
    connection for a service that no longer runs."""
    db = unique("orphan")
    topic = create_table(mariadb, kafka, db)
    spec = pipeline_yaml("p", mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], topic)
    service = Service(write_config(tmp_path / "config", spec), tmp_path / "data", workers=2)
    children: list[int] = []
    try:
        service.start()
        service.wait_running("p")
        assert service.process is not None
        children += child_pids(service.process.pid)
        assert len(children) == 3, children  # the api and two workers
        service.process.kill()
        service.process.wait(10)
        assert wait_until(lambda: all(gone(pid) for pid in children), 30), \
            [pid for pid in children if not gone(pid)]
    finally:
        service.close()
        for pid in children:  # what outlived its supervisor
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_slot_that_cannot_boot_is_reported_not_respawned_in_a_loop(
        tmp_path: Path) -> None:
    """Fault: the supervisor's address-space limit (RLIMIT_AS, what ``ulimit -v`` or systemd's
    LimitAS= set) is lowered so that a newly forked worker cannot map the LMDB environment;
    then worker-1 is killed. Its replacements die at boot, with growing delays; after three
    the slot is in /health (503) and the log. Raising the limit again heals it."""
    service = Service(write_config(tmp_path / "config"), tmp_path / "data", workers=2)
    try:
        service.start()
        service.wait_until(lambda: "supervisor ready" in service.log(None), 60, "workers up")
        assert service.process is not None
        supervisor = service.process.pid
        soft, hard = resource.prlimit(supervisor, resource.RLIMIT_AS)
        vm_kib = int(re.findall(r"VmSize:\s+(\d+) kB",
                                Path(f"/proc/{supervisor}/status").read_text())[0])
        resource.prlimit(supervisor, resource.RLIMIT_AS, (vm_kib * 1024 + 2**30, hard))
        victim = child_pid(service, "worker-1")
        os.kill(victim, signal.SIGKILL)

        service.wait_until(lambda: service.get("/health").status_code == 503, 60, "503")
        [failing] = service.get("/health").json()["failing_workers"]
        assert failing["worker"] == "worker-1" and failing["boot_failures"] >= 3
        assert failing["last_exit_code"] == 1
        log = service.log(None)
        assert "worker-1 cannot boot: died 3 times in a row" in log
        assert "cannot open state" in log  # the worker's own reason is in the log too
        delays = [float(d) for d in re.findall(
            r"child respawn scheduled name=worker-1 restarts=\d+ respawn_in_s=([\d.]+)", log)]
        assert len(delays) >= 4 and delays[1] < delays[2] < delays[3], delays  # backing off
        assert service.get("/health").json()["failed_pipelines"] == []

        resource.prlimit(supervisor, resource.RLIMIT_AS, (soft, hard))
        service.wait_until(lambda: service.get("/health").status_code == 200, 90, "healed")
        assert "child booted after failures name=worker-1" in service.log(None)
        assert not (service.data_dir / "worker-slots.json").exists()
        assert service.stop() == 0
    finally:
        service.close()



def test_a_worker_that_ran_healthily_is_respawned_at_once_and_a_failing_one_backs_off() -> None:
    """kill -9 after a healthy run: its pipelines wait for nothing but the new process. A child
    that dies soon after its start still waits a little; boot failures back off further."""
    backoff = Backoff(initial_s=0.5, max_s=30.0)
    assert respawn_delay(backoff, booted=True, lived_s=HEALTHY_RUN_S) == 0.0
    assert 0.3 < respawn_delay(backoff, booted=True, lived_s=2.0) < 1.0
    failures = [respawn_delay(backoff, booted=False, lived_s=0.5) for _ in range(3)]
    assert failures[0] < failures[1] < failures[2]
    assert respawn_delay(backoff, booted=True, lived_s=HEALTHY_RUN_S * 2) == 0.0
    assert 0.3 < respawn_delay(backoff, booted=True, lived_s=2.0) < 1.0  # reset by the boot
