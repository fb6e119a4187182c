"""DSN parsing for the source: ``state.dsn`` with its errors as ``SourceConfigError``."""

from __future__ import annotations

from state.dsn import DEFAULT_PORT, DsnError, MysqlDsn
from state.dsn import parse_dsn as _parse_dsn
from workers.source.errors import SourceConfigError

__all__ = ["DEFAULT_PORT", "MysqlDsn", "parse_dsn"]


def parse_dsn(dsn: str) -> MysqlDsn:
    """Parse ``mysql://user:pass@host:port/db``; ``SourceConfigError`` says what is wrong."""
    try:
        return _parse_dsn(dsn)
    except DsnError as exc:
        raise SourceConfigError(str(exc)) from None
