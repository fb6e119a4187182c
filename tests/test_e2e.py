"""End to end through the real CLI: MariaDB row changes reach Kafka with the right content."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka_read import Record, read_topic
from tests.support.metrics import metric_samples
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service

pytestmark = pytest.mark.services


def by_key(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        grouped[record.key].append(record)
    return grouped


def native_ops(records: list[Record]) -> list[tuple[str, Any, Any]]:
    return [(r.value["op"], r.value.get("before"), r.value.get("after")) for r in records]


@pytest.fixture
def shop(mariadb: Any) -> str:
    db = unique("shop")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.orders (id INT PRIMARY KEY, item VARCHAR(40), "
                    "qty INT UNSIGNED, price DECIMAL(10,2))")
        cur.execute(f"CREATE TABLE {db}.order_lines (order_id INT, line INT, sku VARCHAR(20), "
                    "PRIMARY KEY (order_id, line))")
        cur.execute(f"CREATE TABLE {db}.ignored (id INT PRIMARY KEY)")
    return db


def test_row_changes_reach_kafka_in_order_with_keys_and_envelopes(
        mariadb: Any, kafka: Any, shop: str, tmp_path: Path) -> None:
    native = pipeline_yaml("native", mariadb.cdc_dsn(), kafka.bootstrap,
                           [f"{shop}.orders", f"{shop}.order_l%"], f"{shop}.${{source.table}}")
    dbz = pipeline_yaml("dbz", mariadb.cdc_dsn(), kafka.bootstrap, [f"{shop}.orders"],
                        f"{shop}.dbz.${{source.table}}", envelope="debezium")
    for topic in ("orders", "order_lines", "dbz.orders"):
        kafka.create_topic(f"{shop}.{topic}", partitions=3)
    service = Service(write_config(tmp_path / "config", native, dbz), tmp_path / "data")
    try:
        service.start()
        service.wait_running("native")
        service.wait_running("dbz")
        with mariadb.connect(shop) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders VALUES (1, 'apple', 3, 1.50), (2, 'pear', 1, 0.99)")
            cur.execute("INSERT INTO ignored VALUES (1)")
            conn.begin()  # one multi-statement transaction across two tables
            cur.execute("INSERT INTO order_lines VALUES (1, 1, 'A-1'), (1, 2, 'B-2')")
            cur.execute("UPDATE orders SET qty = 4294967295 WHERE id = 1")
            conn.commit()
            cur.execute("UPDATE orders SET item = 'grüne äpfel' WHERE id = 1")
            cur.execute("DELETE FROM orders WHERE id = 2")
            cur.execute("DELETE FROM order_lines WHERE order_id = 1 AND line = 2")

        orders = by_key(read_topic(kafka.bootstrap, f"{shop}.orders", expect=5))
        assert native_ops(orders["1"]) == [
            ("c", None, {"id": 1, "item": "apple", "qty": 3, "price": "1.50"}),
            ("u", {"id": 1, "item": "apple", "qty": 3, "price": "1.50"},
             {"id": 1, "item": "apple", "qty": 4294967295, "price": "1.50"}),
            ("u", {"id": 1, "item": "apple", "qty": 4294967295, "price": "1.50"},
             {"id": 1, "item": "grüne äpfel", "qty": 4294967295, "price": "1.50"}),
        ]
        assert native_ops(orders["2"]) == [
            ("c", None, {"id": 2, "item": "pear", "qty": 1, "price": "0.99"}),
            ("d", {"id": 2, "item": "pear", "qty": 1, "price": "0.99"}, None),
        ]
        lines = by_key(read_topic(kafka.bootstrap, f"{shop}.order_lines", expect=3))
        assert sorted(lines) == ["[1,1]", "[1,2]"]
        assert [op for op, _, _ in native_ops(lines["[1,2]"])] == ["c", "d"]
        first = orders["1"][0].value
        assert first["source"]["db"] == shop and first["source"]["table"] == "orders"
        assert all(len({r.partition for r in records}) == 1 for records in orders.values())

        dbz_orders = read_topic(kafka.bootstrap, f"{shop}.dbz.orders", expect=5)
        assert len(dbz_orders) == 5
        assert all(r.value["schema"] is None and r.value["payload"]["op"] in "cud"
                   for r in dbz_orders)

        info = service.pipeline("native")
        assert info["status"] == "running"
        assert info["ops"]["checkpoints"][0]["sink_id"] == "kafka"
        assert "cdcpw" not in str(info["spec"])  # the DSN password is redacted
        events = ("deltaforge_source_events_total",
                  (("op", "c"), ("pipeline", "native"), ("table", f"{shop}.orders")))
        acked = ("deltaforge_sink_events_total", (("pipeline", "native"), ("sink", "kafka")))
        service.wait_until(lambda: metric_samples(service.get("/metrics").text).get(acked) == 8,
                           10, "the batch metrics (written within a second)")
        samples = metric_samples(service.get("/metrics").text)
        assert samples[events] == 2
        assert samples[acked] == 8
        assert service.stop() == 0
        log = service.log(tail_chars=None)  # every process logs through the supervisor
        assert re.search(r"INFO worker-\d workers.runner: pipeline running pipeline=native", log)
        assert "INFO api api.main: api listening" in log
        assert "cdcpw" not in log
    finally:
        service.close()
