"""The write load: one thread and one connection per server, inserts paced by the clock.

Every tick a server's thread sends one round trip of autocommit multi-row INSERTs, one per
table that is due rows (one multi-statement query), so each statement is its own small
transaction on one table, like a tenant's write. Rows due per table follow the clock
(``rate * elapsed``), so a late tick is made up by the next one and the offered rate stays
exact. Ids are explicit and count up from 1 per table; ``commit_us`` is filled by the server
(``NOW(6)``).

The queries go through the ``mariadb`` command-line client (``MariaDBClient``): PyMySQL read
the hundred OK packets of each round trip in Python, about 7 % of a core per 1 000
transactions a second, taken from the service on this 2-core machine.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from deploy.local.mariadb import ROOT_PASSWORD, MariaDBServer
from deploy.local.processes import find_program

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
        self.client_pids: list[int] = []  # the mariadb clients (their CPU is the benchmark's)
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
            with MariaDBClient(server) as client:
                self.client_pids.append(client.pid)
                self._pace(client, load)
        except Exception as exc:  # reported to the benchmark's loop through check()
            log.error("load thread failed port=%d: %r", server.port, exc)
            self.errors.append(exc)

    def _pace(self, client: MariaDBClient, load: ServerLoad) -> None:
        started = time.monotonic()
        next_tick = started
        while not self.stop_event.is_set():
            self._send_due(client, load, time.monotonic() - started)
            next_tick += self.tick_s
            wait_s = next_tick - time.monotonic()
            if wait_s < 0:  # late: the next round trip carries the rows that came due
                load.max_behind_s = max(load.max_behind_s, -wait_s)
                next_tick = time.monotonic()
            self.stop_event.wait(max(0.0, wait_s))

    def _send_due(self, client: MariaDBClient, load: ServerLoad, elapsed_s: float) -> None:
        statements, upto = self._statements(load, elapsed_s)
        if not statements:
            return
        sent = time.perf_counter()
        client.execute(statements)
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


class MariaDBClient:
    """The ``mariadb`` client as a pipe: each ``execute`` is one multi-statement query, and
    returns once the server ran every statement (a marker query after them has answered).
    A failed statement ends the client (``--batch`` stops at an error): that is raised."""

    DELIMITER = "//"  # between queries; ``;`` is left inside a query (multi-statement)
    ANSWER_TIMEOUT_S = 60.0

    def __init__(self, server: MariaDBServer) -> None:
        argv = [find_program("mariadb"), "--no-defaults", "--batch", "--skip-column-names",
                "--unbuffered", "--skip-ssl", f"--host={server.host}",
                f"--port={server.port}", "--user=root"]
        env = {**os.environ, "MYSQL_PWD": ROOT_PASSWORD}  # not on the command line
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env)
        self.pid = self._proc.pid
        self._marker = 0
        self._write(f"DELIMITER {self.DELIMITER}\n")

    def __enter__(self) -> MariaDBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, statements: list[str]) -> None:
        self._marker += 1
        self._write(f"{';'.join(statements)};SELECT {self._marker}{self.DELIMITER}\n")
        stdout = self._proc.stdout
        assert stdout is not None
        # One line answers each query, so nothing is left buffered for select() to miss.
        if not select.select([stdout], [], [], self.ANSWER_TIMEOUT_S)[0]:
            raise RuntimeError(f"mariadb client: no answer within {self.ANSWER_TIMEOUT_S:g}s")
        line = stdout.readline()
        if line.strip() != str(self._marker):
            raise RuntimeError(f"mariadb client: expected marker {self._marker}, got {line!r}; "
                               f"stderr: {self._stderr()}")

    def close(self) -> None:
        self._end()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def _end(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def _write(self, text: str) -> None:
        stdin: IO[str] | None = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(text)
            stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"mariadb client exited: {self._stderr()}") from None

    def _stderr(self) -> str:
        self._end()  # an exited client has written all it will
        assert self._proc.stderr is not None
        return self._proc.stderr.read().strip()
