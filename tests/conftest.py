"""Session fixtures for the real services: a private MariaDB and a private Kafka broker.

Each runs on free ports under the session's tmp dir and is stopped at the end of the session.
A service that cannot start fails the tests under CI=true and skips them elsewhere.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, Protocol

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import free_port


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI job's timeout, ``timeout``, ``kill``) ends the session the way
    Ctrl-C does, so that fixtures and ``finally`` blocks stop the MariaDB, Kafka and services
    the tests started: they run in sessions of their own and would outlive the tests."""
    signal.signal(signal.SIGTERM, interrupt)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


class LocalService(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def unavailable(name: str, exc: Exception) -> NoReturn:
    reason = f"{name} could not be started: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextmanager
def running(name: str, service: LocalService) -> Iterator[None]:
    try:
        service.start()
    except Exception as exc:  # any failure to start is reported the same way
        service.stop()
        unavailable(name, exc)
    try:
        yield
    finally:
        service.stop()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A running MariaDB with row binlog; root via root_dsn/connect(), CDC user via cdc_dsn()."""
    server = MariaDBServer(tmp_path_factory.mktemp("mariadb"), free_port())
    with running("MariaDB", server):
        yield server


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A running single-node KRaft Kafka broker; connect with kafka.bootstrap."""
    port = free_port()
    controller_port = next(p for p in iter(free_port, None) if p != port)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port, controller_port)
    with running("Kafka", broker):
        yield broker


@pytest.fixture
def unique_name() -> str:
    """A fresh name such as t_1a2b3c4d for a topic, database or table of one test."""
    return f"t_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Pids a test forked; each is killed and reaped after the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
