"""A private MariaDB server with a row-based binlog, for tests and the demo."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import pymysql
import pymysql.connections

from deploy.local.processes import (
    ServiceError,
    find_program,
    kill_and_wait,
    log_tail,
    read_pid,
    spawn,
    stop_process,
    wait_until,
)

log = logging.getLogger(__name__)

ROOT_PASSWORD = "rootpw"
CDC_USER = "cdc"
CDC_PASSWORD = "cdcpw"


class MariaDBServer:
    """One mariadbd child process with its own data dir, port, socket and pid file in base_dir."""

    host = "127.0.0.1"

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = Path(base_dir).resolve()
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_dsn(self) -> str:
        return f"mysql://root:{ROOT_PASSWORD}@{self.host}:{self.port}/"

    def cdc_dsn(self, db: str = "") -> str:
        """DSN of the least-privileged user a CDC pipeline uses."""
        return f"mysql://{CDC_USER}:{CDC_PASSWORD}@{self.host}:{self.port}/{db}"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "mariadb.sock"

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "mariadb.pid"

    @property
    def error_log(self) -> Path:
        return self.base_dir / "error.log"

    def pid(self) -> int | None:
        """Pid of the running server of this base_dir, or None."""
        return read_pid(self.pid_path, "mariadbd")

    def execute(self, *statements: str) -> None:
        """Run ``statements`` in order on one root connection."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def connect(self, db: str | None = None) -> pymysql.connections.Connection:
        """A root connection over TCP, autocommit, utf8mb4."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user="root",
            password=ROOT_PASSWORD,
            database=db,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=5,
        )

    def start(self, timeout_s: float = 60.0) -> None:
        """Initialise base_dir once, start mariadbd (or reuse a running one) and provision users."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.pid() is None:
            self._install_db()
            started = time.monotonic()
            self._proc = spawn(self._server_argv(), self.base_dir / "mariadbd.out")
            self._wait_ready(timeout_s)
            log.info("mariadb started port=%d seconds=%.1f", self.port, time.monotonic() - started)
        self._provision()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Shut the server down cleanly (SIGTERM) and wait until it has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            pid = None  # our child already exited (and is reaped): its pid may be reused
        else:
            pid = self.pid() if self._proc is None else self._proc.pid
        if pid is not None:
            stop_process(pid, self._proc, timeout_s)
        self._proc = None

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the server, as a crash would, and wait until it has exited."""
        pid = self.pid() if self._proc is None else self._proc.pid
        if pid is not None:
            kill_and_wait(pid, self._proc, timeout_s)
        self._proc = None

    def restart(self, timeout_s: float = 60.0) -> None:
        """Clean shutdown, then start again on the same data dir and port."""
        self.stop(timeout_s)
        self.start(timeout_s)

    def _install_db(self) -> None:
        if (self.data_dir / "mysql").is_dir():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--user=root",
            "--auth-root-authentication-method=normal",  # root without password until _provision
            "--skip-test-db",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise ServiceError(f"mariadb-install-db failed:\n{result.stdout}\n{result.stderr}")

    def _server_argv(self) -> list[str]:
        return [
            find_program("mariadbd"),
            "--no-defaults",  # ignore /etc/mysql: this server is configured here only
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.error_log}",
            "--user=root",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            "--server-id=1",
            "--log-slave-updates",
            "--innodb-buffer-pool-size=64M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]

    def _wait_ready(self, timeout_s: float) -> None:
        if not wait_until(self._accepts_connections, timeout_s):
            self.stop(timeout_s=10)
            raise ServiceError(
                f"mariadb on port {self.port} not accepting connections after {timeout_s:.0f}s; "
                f"error log {self.error_log}:\n{log_tail(self.error_log)}"
            )

    def _accepts_connections(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServiceError(
                f"mariadbd exited with code {self._proc.returncode}; "
                f"error log {self.error_log}:\n{log_tail(self.error_log)}"
            )
        try:
            self._admin_connection().close()
        except pymysql.err.OperationalError:
            return False
        return True

    def _admin_connection(self) -> pymysql.connections.Connection:
        """Root over the socket: with the password once provisioned, without it before."""
        for password in (ROOT_PASSWORD, ""):
            try:
                return pymysql.connect(
                    unix_socket=str(self.socket_path),
                    user="root",
                    password=password,
                    autocommit=True,
                    connect_timeout=2,
                )
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1045:  # 1045: access denied, try the next password
                    raise
        raise ServiceError("mariadb: root login failed with and without the password")

    def _provision(self) -> None:
        conn = self._admin_connection()
        try:
            with conn.cursor() as cur:
                _secure_root(cur)
                _create_cdc_user(cur)
        finally:
            conn.close()


def _secure_root(cur: pymysql.cursors.Cursor) -> None:
    """Root with the password on the socket and on 127.0.0.1 only, no anonymous accounts.

    With --skip-name-resolve a TCP client from 127.0.0.1 never matches 'localhost', hence
    root@127.0.0.1. mariadb-install-db also creates root@<hostname> and root@::1 without a
    password; accounts by hostname are not even loaded under --skip-name-resolve, so ALTER or
    DROP USER fail on them: they are deleted from the grant table directly.
    """
    password = f"IDENTIFIED BY '{ROOT_PASSWORD}'"
    cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' {password}")
    cur.execute(f"ALTER USER 'root'@'127.0.0.1' {password}")
    cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
    cur.execute(f"ALTER USER 'root'@'localhost' {password}")
    cur.execute(
        "DELETE FROM mysql.global_priv"
        " WHERE user = '' OR (user = 'root' AND host NOT IN ('localhost', '127.0.0.1'))"
    )
    cur.execute("FLUSH PRIVILEGES")


def _create_cdc_user(cur: pymysql.cursors.Cursor) -> None:
    """The cdc user with only what CDC needs: read the binlog, see positions, SELECT.

    SELECT on *.* lets a pipeline read table schemas (information_schema shows only columns
    of tables the user can select from) and take the initial snapshot of a table.
    '%' serves TCP clients, 'localhost' socket clients.
    """
    for host in ("%", "localhost"):
        account = f"'{CDC_USER}'@'{host}'"
        cur.execute(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{CDC_PASSWORD}'")
        cur.execute(f"ALTER USER {account} IDENTIFIED BY '{CDC_PASSWORD}'")
        try:
            # BINLOG MONITOR: MariaDB >= 10.5 name for what SHOW MASTER STATUS needs.
            cur.execute(f"GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO {account}")
        except pymysql.err.ProgrammingError:
            # Older MariaDB and MySQL call it REPLICATION CLIENT.
            cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO {account}")
