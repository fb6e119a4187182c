"""``make demo``: local MariaDB + Kafka, the service with the example pipelines, a write load,
and the change events printed as they arrive.

    python -m deploy.local.demo [--seconds 30] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import MariaDBServer

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = REPO / ".run"
API = "127.0.0.1:8080"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=20.0, help="transactions per second")
    args = parser.parse_args(argv)
    mariadb = MariaDBServer(RUN_DIR / "services" / "mariadb", 3307)
    kafka = KafkaBroker(RUN_DIR / "services" / "kafka", 9092, 9093)
    print("== starting MariaDB (127.0.0.1:3307) and Kafka (127.0.0.1:9092)")
    mariadb.start()
    kafka.start()
    create_shop(mariadb)
    service = start_service(mariadb, kafka)
    try:
        wait_ready()
        show("GET /pipelines", api_get("/pipelines"), summary=True)
        consumer = tail_consumer(kafka.bootstrap, ["cdc.shop.orders", "cdc.shop.customers"])
        run_load(mariadb, consumer, args.seconds, args.rate)
        show("GET /pipelines/shop-orders", api_get("/pipelines/shop-orders")["ops"])
        print_metrics()
        consumer.close()
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(60)
        print(f"== service drained and stopped (exit code {code}); logs: {RUN_DIR / 'demo.log'}")
        print("   MariaDB and Kafka keep running; stop them with: make services-down")
    return 0


def create_shop(mariadb: MariaDBServer) -> None:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS shop")
        cur.execute("CREATE TABLE IF NOT EXISTS shop.customers (id INT PRIMARY KEY, "
                    "name VARCHAR(60), tier ENUM('free','pro','enterprise'))")
        cur.execute("CREATE TABLE IF NOT EXISTS shop.orders (id BIGINT UNSIGNED PRIMARY KEY, "
                    "customer_id INT, total DECIMAL(12,2), status VARCHAR(20), "
                    "created_at DATETIME(3))")


def start_service(mariadb: MariaDBServer, kafka: KafkaBroker) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MYSQL_DSN": mariadb.cdc_dsn(), "KAFKA_BROKERS": kafka.bootstrap}
    argv = [sys.executable, "-m", "supervisor.cli", "--config", str(REPO / "examples/pipelines"),
            "--data-dir", str(RUN_DIR / "demo-data"), "--api-addr", API]
    print("== starting:", " ".join(argv[2:]))
    log = (RUN_DIR / "demo.log").open("ab")
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def api_get(path: str) -> object:
    with urllib.request.urlopen(f"http://{API}{path}", timeout=5) as response:
        return json.loads(response.read())


def wait_ready(timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api_get("/ready")
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"service not ready after {timeout_s}s; see {RUN_DIR / 'demo.log'}")


def tail_consumer(bootstrap: str, topics: list[str]) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4()}",
                         "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000})
    consumer.assign([TopicPartition(topic, 0, -1) for topic in topics])  # -1: from the end
    return consumer


def run_load(mariadb: MariaDBServer, consumer: Consumer, seconds: float, rate: float) -> None:
    print(f"== writing ~{rate:.0f} transactions/s for {seconds:.0f}s; events as they arrive:")
    rng = random.Random()
    shown, deadline = 0, time.monotonic() + seconds
    with mariadb.connect("shop") as conn, conn.cursor() as cur:
        while time.monotonic() < deadline:
            write_one(cur, rng)
            for message in consumer.consume(100, timeout=1 / rate):
                if message.error() is None and shown < 25:
                    shown += 1
                    print_event(message.topic(), message.key(), json.loads(message.value()))
    print(f"   ... ({shown} shown)")


def write_one(cur: object, rng: random.Random) -> None:
    order_id = rng.randrange(1, 500)
    total = f"{rng.uniform(1, 500):.2f}"
    cur.execute(  # type: ignore[attr-defined]
        "INSERT INTO orders VALUES (%s, %s, %s, 'new', NOW(3)) "
        "ON DUPLICATE KEY UPDATE total = VALUES(total), status = 'updated'",
        (order_id, rng.randrange(1, 50), total))
    if rng.random() < 0.2:
        cur.execute("REPLACE INTO customers VALUES (%s, %s, %s)",  # type: ignore[attr-defined]
                    (rng.randrange(1, 50), f"customer {rng.randrange(1000)}",
                     rng.choice(["free", "pro", "enterprise"])))
    if rng.random() < 0.05:
        cur.execute("DELETE FROM orders WHERE id = %s", (order_id,))  # type: ignore[attr-defined]


def print_event(topic: str, key: bytes | None, event: dict[str, object]) -> None:
    row = event.get("after") or event.get("before")
    print(f"   {topic} key={key.decode() if key else None} op={event.get('op')} {row}")


def show(title: str, body: object, summary: bool = False) -> None:
    print(f"== {title}")
    if summary and isinstance(body, list):
        for item in body:
            print(f"   {item['name']}: {item['status']}")
        return
    print("   " + json.dumps(body, indent=2).replace("\n", "\n   "))


def print_metrics() -> None:
    with urllib.request.urlopen(f"http://{API}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    wanted = ("deltaforge_sink_events_total", "deltaforge_source_lag_seconds")
    print("== GET /metrics (excerpt)")
    for line in lines:
        if line.startswith(wanted):
            print("   " + line)


if __name__ == "__main__":
    raise SystemExit(main())
