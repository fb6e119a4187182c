"""Chaos on the Kafka side: broker crash and restart, network cut, slow network, and an
exactly-once commit whose outcome the client never learns.

A dedicated broker (not the session one) whose advertised listener is a TcpProxy in front of
it, so every client connection, bootstrap and partition leader alike, goes through the proxy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.processes import free_port
from state.records import BinlogPosition
from state.spec import KafkaConfigSpec
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
from tests.support.kafka_read import read_topic
from tests.support.pipelines import unique
from tests.support.proxy import TcpProxy
from tests.support.service import Service
from tests.test_kafka_sink import make_event
from workers.sinks.errors import CommitOutcomeUnknown
from workers.sinks.kafka_txn import TransactionalKafkaSink

pytestmark = pytest.mark.services
modes = pytest.mark.parametrize("mode", DELIVERY_MODES, ids=lambda m: m.name)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, TcpProxy]]:
    """A private broker advertised at a proxy's port; clients use ``proxy.address``."""
    port = free_port()
    controller_port = next(p for p in iter(free_port, None) if p != port)
    with TcpProxy("127.0.0.1", port) as proxy:
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka-chaos"), port, controller_port,
                             advertised_port=proxy.port)
        with running("Kafka (chaos)", broker):
            yield broker, proxy


@pytest.fixture
def run_fault(mariadb: Any, proxied: tuple[KafkaBroker, TcpProxy], tmp_path: Path
              ) -> Callable[[DeliveryMode, Callable[[], None]], None]:
    """Start a pipeline and a steady load, apply ``fault`` after 1.5 s, load 2 s more, then
    compare every committed change with the topic's content."""
    broker, proxy = proxied

    def run(mode: DeliveryMode, fault: Callable[[], None]) -> None:
        db = unique("chaos_kafka")
        topic = create_table(mariadb, broker, db)
        service = start_pipeline(tmp_path, mode, mariadb.cdc_dsn(), proxy.address, db)
        writer = ChangeWriter(lambda: mariadb.connect(db))
        watcher = StatusWatcher(service, broker=broker)
        try:
            writer.start()
            watcher.start()
            time.sleep(1.5)
            checkpoints = [fault_checkpoint(service)]
            fault()
            time.sleep(2)
            writer.stop()
            service.wait_running("p", 90)
            expected = committed_rows(mariadb, db)
            records = read_delivery(broker.bootstrap, topic, mode, writer, expected)
            assert_delivered(records, writer, expected, mode, checkpoints)
        finally:
            watcher.stop()
            writer.stop()
            proxy.restore()
            service.close()

    return run


def fault_checkpoint(service: Service) -> BinlogPosition:
    """The checkpoint when the fault starts: every replay it causes begins at or after it."""
    checkpoint = read_checkpoint(service.data_dir)
    assert checkpoint is not None
    return checkpoint


@modes
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_broker_stop_and_start_during_load_loses_nothing(
        run_fault: Any, proxied: tuple[KafkaBroker, TcpProxy], mode: DeliveryMode,
        signal_name: str) -> None:
    """The broker is killed (SIGKILL) or stopped (SIGTERM, controlled shutdown) during the load,
    stays down 4 s while rows keep coming, then starts again on the same data. The pipeline
    stalls or fails and retries; it recovers by itself and Kafka ends up with every change."""
    broker, _ = proxied

    def bounce() -> None:
        broker.kill() if signal_name == "SIGKILL" else broker.stop()
        time.sleep(4)
        broker.start()

    run_fault(mode, bounce)


@modes
def test_network_cut_to_kafka_loses_nothing(
        run_fault: Any, proxied: tuple[KafkaBroker, TcpProxy], mode: DeliveryMode) -> None:
    """Every connection to Kafka is closed and new ones are refused for 5 s (the proxy's cut),
    then the network comes back. The producer reconnects; nothing is lost."""
    _, proxy = proxied

    def cut() -> None:
        proxy.cut()
        time.sleep(5)
        proxy.restore()

    run_fault(mode, cut)


@modes
def test_slow_kafka_loses_nothing(
        run_fault: Any, proxied: tuple[KafkaBroker, TcpProxy], mode: DeliveryMode) -> None:
    """Kafka gets slow: 300 ms added to every chunk both ways for 4 s, then 20 kB/s per
    connection for 4 s, then normal again. Batches back up; nothing is lost or reordered."""
    _, proxy = proxied

    def slow() -> None:
        proxy.delay(0.3)
        time.sleep(4)
        proxy.restore()
        proxy.throttle(20_000)
        time.sleep(4)
        proxy.restore()

    run_fault(mode, slow)


class FaultAtCommit:
    """The sink's producer, except that ``commit_transaction`` first waits until the batch's
    messages are acknowledged, then applies ``fault`` to the network: the commit request
    itself is the first thing the fault hits."""

    def __init__(self, producer: Any, fault: Callable[[], None]) -> None:
        self._producer, self._fault = producer, fault

    def commit_transaction(self, timeout_s: float) -> None:
        assert self._producer.flush(20) == 0
        self._fault()
        self._producer.commit_transaction(timeout_s)

    def __len__(self) -> int:  # messages queued (a special method: not found by __getattr__)
        return len(self._producer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


@pytest.mark.parametrize("fault", ["hang_replies", "hang", "cut"])
def test_a_commit_with_unknown_outcome_is_resolved_by_the_next_instance(
        proxied: tuple[KafkaBroker, TcpProxy], fault: str) -> None:
    """The commit request reaches the broker but its reply is lost (``hang_replies``: the batch
    is in Kafka), or the request is held (``hang``) or dropped (``cut``) and may or may not
    land later. The sink cannot tell: it must neither report the batch failed for a re-send (a
    duplicate if it landed) nor done (a gap if it did not). It raises ``CommitOutcomeUnknown``
    and closes while the fault lasts; the next instance fences it and reads back a position
    that matches exactly what ``read_committed`` consumers see."""
    broker, proxy = proxied
    topic, checkpoints = unique("eos_unknown"), unique("ckpt")
    broker.create_topic(topic)
    spec = KafkaConfigSpec(id="eos", brokers=proxy.address, topic=topic, exactly_once=True,
                           checkpoint_topic=checkpoints, send_timeout_secs=3)
    first, second = BinlogPosition("bin.000001", 100), BinlogPosition("bin.000001", 200)
    sink = TransactionalKafkaSink("p", "t", spec)
    try:
        sink.committed_position(timeout_s=20)
        sink.send_batch(1, [make_event("t", i, 1, op="c") for i in range(3)], first)
        sink._producer = FaultAtCommit(  # type: ignore[assignment]
            sink._producer, getattr(proxy, fault))
        with pytest.raises(CommitOutcomeUnknown, match="restarts and reads its position back"):
            sink.send_batch(2, [make_event("t", i, 1, op="c") for i in range(3, 6)], second)
        outcomes = sink.take_completed()
        assert [o.error is None for o in outcomes] == [True, False]
        began = time.monotonic()
        sink.close()
        print(f"closed in {time.monotonic() - began:.1f}s")
    finally:
        proxy.restore()
        sink.close()
    restarted = TransactionalKafkaSink("p", "t", spec)
    try:
        position = restarted.committed_position(timeout_s=30)
    finally:
        restarted.close()
    records = read_topic(broker.bootstrap, topic, 6, timeout_s=5, isolation="read_committed")
    print(f"{fault}: position {position.pos if position else None}, {len(records)} records")
    assert (position, len(records)) in [(first, 3), (second, 6)]
    if fault == "hang_replies":
        assert position == second  # the broker had the request: the commit landed
