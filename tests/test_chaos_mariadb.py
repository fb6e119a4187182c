"""Chaos on the MariaDB side: server restart and crash, network cut between reader and server.

A dedicated MariaDB (not the session one) so restarts and kills cannot disturb other tests.
The pipeline reads through a TcpProxy; the load writes to the server directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mariadb import CDC_PASSWORD, CDC_USER, MariaDBServer
from deploy.local.processes import free_port
from tests.conftest import running
from tests.support.chaos import (
    DELIVERY_MODES,
    ChangeWriter,
    DeliveryMode,
    StatusWatcher,
    assert_delivered,
    committed_rows,
    create_table,
    read_checkpoint,
    read_delivery,
    start_pipeline,
)
from tests.support.pipelines import unique
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.services
modes = pytest.mark.parametrize("mode", DELIVERY_MODES, ids=lambda m: m.name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A private MariaDB with row binlog that these tests may restart and kill."""
    mariadb = MariaDBServer(tmp_path_factory.mktemp("mariadb-chaos"), free_port())
    with running("MariaDB (chaos)", mariadb):
        yield mariadb


@pytest.fixture
def proxy(server: MariaDBServer) -> Iterator[TcpProxy]:
    with TcpProxy(server.host, server.port) as running_proxy:
        yield running_proxy


@pytest.fixture
def run_fault(server: MariaDBServer, proxy: TcpProxy, kafka: Any, tmp_path: Path
              ) -> Callable[[DeliveryMode, Callable[[], None]], None]:
    """Start a pipeline reading through the proxy and a steady load, apply ``fault`` after
    1.5 s, load 2 s more, then compare every committed change with the topic's content."""

    def run(mode: DeliveryMode, fault: Callable[[], None]) -> None:
        db = unique("chaos_db")
        topic = create_table(server, kafka, db)
        dsn = f"mysql://{CDC_USER}:{CDC_PASSWORD}@{proxy.address}/"
        service = start_pipeline(tmp_path, mode, dsn, kafka.bootstrap, db)
        writer = ChangeWriter(lambda: server.connect(db))
        watcher = StatusWatcher(service)
        try:
            writer.start()
            watcher.start()
            time.sleep(1.5)
            checkpoint = read_checkpoint(service.data_dir)
            assert checkpoint is not None
            fault()
            time.sleep(2)
            writer.stop()
            service.wait_running("p", 90)
            expected = committed_rows(server, db)
            records = read_delivery(kafka.bootstrap, topic, mode, writer, expected)
            assert_delivered(records, writer, expected, mode, [checkpoint])
        finally:
            watcher.stop()
            writer.stop()
            proxy.restore()
            service.close()

    return run


@modes
@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_mariadb_restart_during_load_loses_nothing(
        run_fault: Any, server: MariaDBServer, mode: DeliveryMode, how: str) -> None:
    """MariaDB is shut down cleanly (SIGTERM) or crashes (SIGKILL) during the load and starts
    again on the same data dir, in a new binlog file. The load reconnects and goes on; the
    binlog reader reconnects from where it was and nothing is lost."""

    def bounce() -> None:
        if how == "restart":
            server.stop()
        else:
            server.kill()
        time.sleep(1)
        server.start()

    run_fault(mode, bounce)


@modes
def test_network_cut_to_mariadb_loses_nothing(
        run_fault: Any, proxy: TcpProxy, mode: DeliveryMode) -> None:
    """The reader's connections to MariaDB are closed and new ones refused for 4 s (the proxy's
    cut) while the load goes on directly; then the network comes back. The reader reconnects
    from its position by itself and nothing is lost."""

    def cut() -> None:
        proxy.cut()
        time.sleep(4)
        proxy.restore()

    run_fault(mode, cut)


@modes
def test_silent_partition_to_mariadb_loses_nothing(
        run_fault: Any, proxy: TcpProxy, mode: DeliveryMode) -> None:
    """The network between reader and MariaDB goes silent for 8 s: nothing forwarded, nothing
    closed (the proxy's hang), longer than the source's read_timeout_s (5 s). The reader must
    notice the dead connection by itself, reconnect once the network is back, lose nothing."""

    def partition() -> None:
        proxy.hang()
        time.sleep(8)
        proxy.restore()

    run_fault(mode, partition)
