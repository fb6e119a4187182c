"""The write load: one thread and one connection per server, inserts paced by the clock.

Every tick a server's thread sends one round trip of autocommit multi-row INSERTs, one per
table that is due rows (``MULTI_STATEMENTS``), so each statement is its own small transaction
on one table, like a tenant's write. Rows due per table follow the clock (``rate * elapsed``),
so a late tick is made up by the next one and the offered rate stays exact. Ids are explicit
and count up from 1 per table; ``commit_us`` is filled by the server (``NOW(6)``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pymysql

from benchmarks.fleet.environment import root_connection
from deploy.local.mariadb import MariaDBServer

log = logging.getLogger(__name__)

MAX_ROWS_PER_STATEMENT = 1000


@dataclass
class ServerLoad:
    """What one server's thread has issued and committed; read by the benchmark while it runs."""

    database: str
    tables: list[str]
    issued: list[int]  # per table: highest id put into a statement (sent or about to be)
    committed: list[int]  # per table: highest id whose round trip returned
    round_trips_s: list[float] = field(default_factory=list)
    max_behind_s: float = 0.0


class LoadGenerator:
    """``rate_per_table`` rows/s into every table of every server until stopped."""

    def __init__(self, servers: list[MariaDBServer], database: str, tables: list[str],
                 rate_per_table: float, tick_s: float) -> None:
        self.servers = servers
        self.rate_per_table, self.tick_s = rate_per_table, tick_s
        self.loads = [ServerLoad(database, tables, [0] * len(tables), [0] * len(tables))
                      for _ in servers]
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def start(self) -> None:
        self.started_at = time.time()
        for server, load in zip(self.servers, self.loads, strict=True):
            thread = threading.Thread(target=self._run, args=(server, load),
                                      name=f"load-{server.port}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)
        if not self.stopped_at:
            self.stopped_at = time.time()

    def check(self) -> None:
        """Raise the first error of a load thread (a failed INSERT ends the benchmark)."""
        if self.errors:
            raise RuntimeError(f"load generator failed: {self.errors[0]!r}") from self.errors[0]

    def committed_rows(self) -> int:
        return sum(sum(load.committed) for load in self.loads)

    def issued_snapshot(self) -> list[list[int]]:
        return [list(load.issued) for load in self.loads]

    def _run(self, server: MariaDBServer, load: ServerLoad) -> None:
        try:
            conn = root_connection(server, multi_statements=True)
            try:
                self._pace(conn, load)
            finally:
                conn.close()
        except Exception as exc:  # reported to the benchmark's loop through check()
            log.error("load thread failed port=%d: %r", server.port, exc)
            self.errors.append(exc)

    def _pace(self, conn: pymysql.connections.Connection, load: ServerLoad) -> None:
        started = time.monotonic()
        next_tick = started
        while not self.stop_event.is_set():
            self._send_due(conn, load, time.monotonic() - started)
            next_tick += self.tick_s
            wait_s = next_tick - time.monotonic()
            if wait_s < 0:  # late: the next round trip carries the rows that came due
                load.max_behind_s = max(load.max_behind_s, -wait_s)
                next_tick = time.monotonic()
            self.stop_event.wait(max(0.0, wait_s))

    def _send_due(self, conn: pymysql.connections.Connection, load: ServerLoad,
                  elapsed_s: float) -> None:
        statements, upto = self._statements(load, elapsed_s)
        if not statements:
            return
        sent = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(";".join(statements))
            while cur.nextset():
                pass
        load.round_trips_s.append(time.perf_counter() - sent)
        for index, last in upto.items():
            load.committed[index] = last

    def _statements(self, load: ServerLoad, elapsed_s: float) -> tuple[list[str], dict[int, int]]:
        """One INSERT per table that is due rows; tables are phase-shifted to spread the load."""
        statements: list[str] = []
        upto: dict[int, int] = {}
        count = len(load.tables)
        for index, table in enumerate(load.tables):
            due = int(self.rate_per_table * elapsed_s + index / count)
            first, last = load.issued[index] + 1, min(due, load.issued[index] +
                                                      MAX_ROWS_PER_STATEMENT)
            if last < first:
                continue
            values = ",".join(f"({i})" for i in range(first, last + 1))
            statements.append(f"INSERT INTO {load.database}.{table} (id) VALUES {values}")
            load.issued[index] = upto[index] = last
        return statements, upto

