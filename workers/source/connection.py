"""Connecting to the source server: settings, preflight checks, and pymysql errors as ours."""

from __future__ import annotations

import io
import re
import select
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import pymysql

from state.spec import MysqlConfigSpec
from workers.source.dsn import MysqlDsn, parse_dsn
from workers.source.errors import (
    SourceAuthError,
    SourceConfigError,
    SourceError,
    SourcePositionLostError,
    SourceUnreachableError,
)

CONNECT_TIMEOUT_S = 10
GRANTS = "REPLICATION SLAVE, REPLICATION CLIENT (MySQL) or BINLOG MONITOR (MariaDB), SELECT"
_AUTH_CODES = frozenset({1044, 1045, 1142, 1227, 1698})
_POSITION_LOST_CODES = frozenset({1236})
_REQUIRED_SETTINGS = {
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}
# Settings under which mysql-replication silently drops row changes: it cannot read MariaDB's
# compressed events, MySQL's transaction payloads or partial JSON updates.
_UNREADABLE_SETTINGS = {
    "log_bin_compress": ("ON", "MariaDB compressed binlog events"),
    "binlog_transaction_compression": ("ON", "MySQL compressed transaction payloads"),
    "binlog_row_value_options": ("PARTIAL_JSON", "MySQL partial JSON updates"),
}
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)


def connection_settings(config: MysqlConfigSpec, dsn: MysqlDsn | None = None) -> dict[str, Any]:
    """pymysql keyword arguments for the server of ``config``."""
    dsn = dsn or parse_dsn(config.dsn)
    return {
        "host": dsn.host,
        "port": dsn.port,
        "user": dsn.user,
        "password": dsn.password,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": config.read_timeout_s,
        "charset": "utf8mb4",
    }


class Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, whose default TLS mode (PREFERRED: TLS when the server offers it,
    no certificate check) uses one context per process. PyMySQL builds a new one for every
    connection, loading the CA store: about 50 ms of CPU each, which made hundreds of
    pipelines start one at a time."""

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if isinstance(sslp, dict) and not sslp:  # PyMySQL's PREFERRED mode
            return preferred_tls_context()
        return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]


class DumpConnection(Connection):
    """A binlog dump connection: it reads from its socket through a 256 KiB buffer instead of
    PyMySQL's 8 KiB, in steps of at least ``READ_PAUSE_S`` (``PausingSocketIO``). Every refill
    gives up the GIL for a ``recv``, and a thread that gave it up waits for it behind the
    worker's busy data loop (up to the 5 ms switch interval): with 8 KiB, about 30 small
    transactions per wait, a cap on how fast a shared stream can follow a busy server."""

    READ_BUFFER_BYTES = 256 * 1024
    READ_PAUSE_S = 0.005

    def connect(self, sock: Any = None) -> None:
        super().connect(sock)
        # Between the handshake and the first command the server sends nothing: no bytes
        # are left behind in PyMySQL's reader (it does the same when it switches to TLS).
        self._sock._io_refs += 1  # as socket.makefile does: the socket closes after its reader
        self._rfile = io.BufferedReader(PausingSocketIO(self._sock, self.READ_PAUSE_S),
                                        self.READ_BUFFER_BYTES)


class PausingSocketIO(socket.SocketIO):
    """A socket's raw reader that, when nothing is waiting to be read, waits for the first
    bytes and then ``pause_s`` more before it reads.

    A server writes the binlog of a busy moment as a stream of small transactions. Read as they
    come, each wakes the reading thread, which must take the GIL from the worker's data loop
    and give it back: a thread switch or two per transaction, which on a loaded host cost
    several times what parsing the transaction does. Reading what a few milliseconds brought
    in one go wakes the thread once for all of them; the events are a few milliseconds later.
    The few queries mysql-replication sends on the connection before the dump wait as long
    for their answers (about 20 ms per connection). Timeouts are the socket's, as for
    ``recv``."""

    def __init__(self, sock: socket.socket, pause_s: float) -> None:
        super().__init__(sock, "rb")
        self._pause_s = pause_s

    def readinto(self, buffer: Any) -> int | None:
        sock: Any = self._sock  # type: ignore[attr-defined]
        if not _readable(sock, 0.0):
            if not _readable(sock, sock.gettimeout()):
                self._timeout_occurred = True  # as ``SocketIO.readinto`` on a timeout
                raise TimeoutError("timed out")
            time.sleep(self._pause_s)
        return super().readinto(buffer)


def _readable(sock: Any, timeout_s: float | None) -> bool:
    """Bytes are waiting in ``sock`` (or in its TLS layer) within ``timeout_s``."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], timeout_s)[0])


@cache
def preferred_tls_context() -> ssl.SSLContext:
    """The context PyMySQL builds for PREFERRED mode, built once."""
    context = ssl.create_default_context()
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(config: MysqlConfigSpec, dsn: MysqlDsn) -> pymysql.connections.Connection:
    """A plain autocommit connection, with failures translated to ``SourceError``."""
    try:
        return Connection(**connection_settings(config, dsn), autocommit=True)
    except Exception as exc:
        raise classify(exc, dsn) from exc


@contextmanager
def server_session(config: MysqlConfigSpec) -> Iterator[tuple[Any, MysqlDsn]]:
    """A short control connection; any failure inside comes out as a ``SourceError``."""
    dsn = parse_dsn(config.dsn)
    conn = connect(config, dsn)
    try:
        yield conn, dsn
    except Exception as exc:
        raise classify(exc, dsn) from exc
    finally:
        conn.close()


def classify(exc: BaseException, dsn: MysqlDsn) -> SourceError:
    """A connection or stream failure as the ``SourceError`` that says what to do about it."""
    if isinstance(exc, SourceError):
        return exc
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    cause = _cause(exc)
    if code in _AUTH_CODES:
        return SourceAuthError(
            f"access denied for {dsn.user}@{dsn.address}: {cause}; the user needs {GRANTS}"
        )
    if code in _POSITION_LOST_CODES:
        return SourcePositionLostError(
            f"binlog position lost on {dsn.address}: {cause}; re-snapshot the pipeline or "
            "reset its position (the binlog file was purged)"
        )
    return SourceUnreachableError(f"cannot read binlog from {dsn.address}: {cause}")


def _cause(exc: BaseException) -> str:
    if len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return str(exc) or type(exc).__name__


def check_server(conn: pymysql.connections.Connection, dsn: MysqlDsn) -> None:
    """Fail early and clearly when the server's binlog cannot give full row images."""
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
            "'log_bin_compress', 'binlog_transaction_compression', 'binlog_row_value_options')"
        )
        settings = {str(k).lower(): str(v).upper() for k, v in cur.fetchall()}
    if settings.get("log_bin") != "ON":
        raise SourceConfigError(f"binary logging is off on {dsn.address} (enable log_bin)")
    wrong = [
        f"{k}={settings.get(k)} (need {v})"
        for k, v in _REQUIRED_SETTINGS.items()
        if settings.get(k) != v
    ]
    wrong += [
        f"{name}={settings[name]} (the binlog reader would miss rows in {what}; turn it off)"
        for name, (value, what) in _UNREADABLE_SETTINGS.items()
        if value in settings.get(name, "")
    ]
    if wrong:
        raise SourceConfigError(f"server {dsn.address} cannot be captured: {', '.join(wrong)}")


def json_columns(conn: pymysql.connections.Connection, schema: str, table: str) -> frozenset[str]:
    """MariaDB JSON columns of a table (LONGTEXT with a ``json_valid`` check)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (schema, table),
        )
        clauses = [str(row[0]) for row in cur.fetchall()]
    return frozenset(m.replace("``", "`") for c in clauses for m in _JSON_CHECK.findall(c))
