"""The fleet benchmark's write load: what it reports committed is in the tables, errors stop it."""

from __future__ import annotations

import time

import pytest

from benchmarks.fleet.environment import TABLE_DDL
from benchmarks.fleet.load import LoadGenerator, MariaDBClient
from deploy.local.mariadb import MariaDBServer

pytestmark = pytest.mark.services


def make_tables(mariadb: MariaDBServer, db: str, tables: list[str]) -> None:
    mariadb.execute(f"CREATE DATABASE {db}",
                    *[TABLE_DDL.format(db=db, table=table) for table in tables])


def row_counts(mariadb: MariaDBServer, db: str, tables: list[str]) -> list[int]:
    with mariadb.connect() as conn, conn.cursor() as cur:
        counts = []
        for table in tables:
            cur.execute(f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM {db}.{table}")
            count, highest = cur.fetchone()
            assert count == highest  # ids 1..n, none skipped
            counts.append(count)
        return counts


def test_the_client_returns_once_every_statement_ran_and_raises_on_an_error(
        mariadb: MariaDBServer, unique_name: str) -> None:
    db = unique_name
    make_tables(mariadb, db, ["a", "b"])
    with MariaDBClient(mariadb) as client:
        client.execute([f"INSERT INTO {db}.a (id) VALUES (1),(2)",
                        f"INSERT INTO {db}.b (id) VALUES (1)"])
        assert row_counts(mariadb, db, ["a", "b"]) == [2, 1]
        with pytest.raises(RuntimeError, match="doesn't exist"):
            client.execute([f"INSERT INTO {db}.missing (id) VALUES (1)"])


def test_the_load_commits_what_it_reports_and_no_more_than_the_clock_made_due(
        mariadb: MariaDBServer, unique_name: str) -> None:
    db, tables = unique_name, ["t0", "t1", "t2"]
    make_tables(mariadb, db, tables)
    load = LoadGenerator([mariadb], db, tables, rate_per_table=20.0, tick_s=0.1)
    load.start()
    time.sleep(1.5)
    load.stop()
    load.check()
    elapsed_s = load.stopped_at - load.started_at
    committed = load.loads[0].committed
    assert row_counts(mariadb, db, tables) == committed == load.loads[0].issued
    assert 0 < min(committed) and max(committed) <= 20 * elapsed_s + 1
