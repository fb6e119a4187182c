"""``mysql://user:pass@host:port/db`` DSNs, parsed once and never logged with the password."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from workers.source.errors import SourceConfigError

DEFAULT_PORT = 3306


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
    """Parse ``mysql://user:pass@host:port/db``; ``SourceConfigError`` says what is wrong."""
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("mysql", "mariadb"):
        raise SourceConfigError("DSN must start with mysql:// (mysql://user:pass@host:port/db)")
    if not parts.hostname:
        raise SourceConfigError("DSN has no host (mysql://user:pass@host:port/db)")
    if not parts.username:
        raise SourceConfigError(f"DSN for {parts.hostname} has no user")
    return MysqlDsn(
        host=parts.hostname,
        port=_port(parts.hostname, dsn),
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")),
    )


def _port(host: str, dsn: str) -> int:
    try:
        port = urlsplit(dsn.strip()).port
    except ValueError:
        raise SourceConfigError(f"DSN for {host} has an invalid port") from None
    return DEFAULT_PORT if port is None else port
