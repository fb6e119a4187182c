"""``mysql://user:pass@host:port/db`` DSNs, parsed once and never logged with the password.

Here in ``state`` so the supervisor can learn a pipeline's server address (for placement)
without importing the workers' source package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 3306


class DsnError(ValueError):
    """A DSN that cannot be parsed; the message never contains the password."""


@dataclass(frozen=True)
class MysqlDsn:
    """Connection coordinates of one MySQL/MariaDB server."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def redacted(self) -> str:
        """The DSN with the password replaced by ``***``, safe to log and return."""
        secret = ":***" if self.password else ""
        return f"mysql://{self.user}{secret}@{self.address}/{self.database}"


def parse_dsn(dsn: str) -> MysqlDsn:
    """Parse ``mysql://user:pass@host:port/db``; ``DsnError`` says what is wrong."""
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("mysql", "mariadb"):
        raise DsnError("DSN must start with mysql:// (mysql://user:pass@host:port/db)")
    if not parts.hostname:
        raise DsnError("DSN has no host (mysql://user:pass@host:port/db)")
    if not parts.username:
        raise DsnError(f"DSN for {parts.hostname} has no user")
    return MysqlDsn(
        host=parts.hostname,
        port=_port(parts.hostname, dsn),
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")),
    )


def server_address(dsn: str) -> str:
    """``host:port`` of the DSN's server, lower-cased (user and password play no part)."""
    parts = urlsplit(dsn.strip())
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = DEFAULT_PORT
    return f"{(parts.hostname or '').lower()}:{port}"


def _port(host: str, dsn: str) -> int:
    try:
        port = urlsplit(dsn.strip()).port
    except ValueError:
        raise DsnError(f"DSN for {host} has an invalid port") from None
    return DEFAULT_PORT if port is None else port
