"""Start, stop and show the local MariaDB and Kafka that the demo uses.

    python -m deploy.local.services up|down|status [--dir .run/services]

`up` leaves both servers running in the background (their own sessions, so they outlive this
command) and writes `<dir>/env` with MYSQL_DSN, MYSQL_ROOT_DSN and KAFKA_BROKERS lines.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from deploy.local.kafka import KafkaBroker
from deploy.local.mariadb import MariaDBServer
from deploy.local.processes import ServiceError

DEFAULT_DIR = Path(".run/services")


def build_services(args: argparse.Namespace) -> tuple[MariaDBServer, KafkaBroker]:
    base: Path = args.dir
    mariadb = MariaDBServer(base / "mariadb", args.mysql_port)
    kafka = KafkaBroker(base / "kafka", args.kafka_port, args.kafka_controller_port)
    return mariadb, kafka


def up(mariadb: MariaDBServer, kafka: KafkaBroker, env_path: Path) -> None:
    for name, service in (("mariadb", mariadb), ("kafka", kafka)):
        started = time.monotonic()
        service.start()
        print(f"{name}: up pid={service.pid()} in {time.monotonic() - started:.1f}s")
    env_path.write_text(
        f"MYSQL_DSN={mariadb.cdc_dsn()}\n"
        f"MYSQL_ROOT_DSN={mariadb.root_dsn}\n"
        f"KAFKA_BROKERS={kafka.bootstrap}\n"
    )
    print(f"env: {env_path}")


def down(mariadb: MariaDBServer, kafka: KafkaBroker, env_path: Path) -> None:
    for name, service in (("kafka", kafka), ("mariadb", mariadb)):
        service.stop()
        print(f"{name}: down")
    env_path.unlink(missing_ok=True)


def status(mariadb: MariaDBServer, kafka: KafkaBroker) -> int:
    """Print each service's state; exit code 0 only if both run."""
    running = 0
    for name, service, address in (
        ("mariadb", mariadb, f"{mariadb.host}:{mariadb.port}"),
        ("kafka", kafka, kafka.bootstrap),
    ):
        pid = service.pid()
        running += pid is not None
        state = f"running pid={pid}" if pid is not None else "stopped"
        print(f"{name}: {state} {address}")
    return 0 if running == 2 else 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder (%(default)s)")
    parser.add_argument("--mysql-port", type=int, default=3307)
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--kafka-controller-port", type=int, default=9093)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.dir = args.dir.resolve()
    args.dir.mkdir(parents=True, exist_ok=True)
    mariadb, kafka = build_services(args)
    env_path = args.dir / "env"
    try:
        if args.command == "up":
            up(mariadb, kafka, env_path)
        elif args.command == "down":
            down(mariadb, kafka, env_path)
        else:
            return status(mariadb, kafka)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
