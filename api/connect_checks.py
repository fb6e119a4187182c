"""``POST /validate?connect=true``: can this spec's servers actually be used?

Deviation from "api imports only state": the checks talk to MySQL (pymysql) and Kafka
(confluent_kafka AdminClient) directly instead of importing ``workers``, because the api must
not pull in the data plane and the supervisor must not hold clients. They mirror the reader's
preflight (workers/source/connection.py) and are run in a thread, each with a short timeout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from api.redact import redact_text
from state.spec import KafkaConfigSpec, MysqlConfigSpec, PipelineSpec

TIMEOUT_S = 5
BINLOG_SETTINGS = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL",
                   "binlog_row_metadata": "FULL"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str


def run_checks(spec: PipelineSpec) -> list[dict[str, Any]]:
    """MySQL connect, grants and binlog settings, then each Kafka sink's brokers."""
    checks = mysql_checks(spec.spec.source.config)
    checks += [kafka_check(sink.config) for sink in spec.spec.sinks]
    return [asdict(check) for check in checks]


def mysql_checks(config: MysqlConfigSpec) -> list[Check]:
    try:
        conn = pymysql.connect(**_settings(config.dsn))
    except Exception as exc:  # any failure to connect is the check's answer
        failed = Check("mysql.connect", False, _reason(exc))
        skipped = "skipped: not connected"
        return [failed, Check("mysql.grants", False, skipped),
                Check("mysql.binlog", False, skipped)]
    try:
        connected = Check("mysql.connect", True, f"connected, server {conn.get_server_info()}")
        return [connected, _grants_check(conn), _binlog_check(conn)]
    finally:
        conn.close()


def _settings(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not parts.username:
        raise ValueError("DSN must look like mysql://user:pass@host:port/db")
    return {"host": parts.hostname, "port": parts.port or 3306,
            "user": unquote(parts.username), "password": unquote(parts.password or ""),
            "connect_timeout": TIMEOUT_S, "read_timeout": TIMEOUT_S}


def _grants_check(conn: Any) -> Check:
    with conn.cursor() as cur:
        cur.execute("SHOW GRANTS FOR CURRENT_USER()")
        grants = " ".join(str(row[0]).upper() for row in cur.fetchall())
    needed = {"REPLICATION SLAVE": ("REPLICATION SLAVE",),
              "BINLOG MONITOR or REPLICATION CLIENT": ("BINLOG MONITOR", "REPLICATION CLIENT",
                                                       "SUPER"),
              "SELECT": ("SELECT",)}
    if "ALL PRIVILEGES" in grants:
        return Check("mysql.grants", True, "ALL PRIVILEGES")
    missing = [name for name, any_of in needed.items() if not any(g in grants for g in any_of)]
    if missing:
        return Check("mysql.grants", False, f"missing grants: {', '.join(missing)}")
    return Check("mysql.grants", True, "REPLICATION SLAVE, binlog monitoring and SELECT granted")


def _binlog_check(conn: Any) -> Check:
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                    "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')")
        found = {str(k).lower(): str(v).upper() for k, v in cur.fetchall()}
    wrong = [f"{k}={found.get(k)} (need {v})" for k, v in BINLOG_SETTINGS.items()
             if found.get(k) != v]
    if wrong:
        return Check("mysql.binlog", False, "; ".join(wrong))
    return Check("mysql.binlog", True, "log_bin=ON, ROW format, FULL row image and metadata")


def kafka_check(config: KafkaConfigSpec) -> Check:
    name = f"kafka.{config.id}"
    conf: dict[str, Any] = {"bootstrap.servers": config.brokers, "log_level": 0,
                            "socket.timeout.ms": TIMEOUT_S * 1000}
    conf.update(config.client_conf)
    try:
        metadata = AdminClient(conf).list_topics(timeout=TIMEOUT_S)
    except (KafkaException, ValueError, TypeError) as exc:
        return Check(name, False, f"brokers {config.brokers} did not answer: {_reason(exc)}")
    return Check(name, True, f"{len(metadata.brokers)} broker(s) answered")


def _reason(exc: BaseException) -> str:
    text = f"({exc.args[0]}) {exc.args[1]}" if len(exc.args) >= 2 else str(exc)
    return redact_text(text or type(exc).__name__)
