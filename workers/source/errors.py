"""Errors of the binlog source, grouped by what the caller does with them.

Fatal: ``SourceConfigError``, ``SourceAuthError``, ``SourcePositionLostError`` and
``SourceDecodeError`` end the reader. Transient: ``SourceUnreachableError`` is retried.
"""

from __future__ import annotations


class SourceError(Exception):
    """Root of every error the binlog source raises or reports."""

    fatal = True


class SourceConfigError(SourceError):
    """A DSN or server setting that cannot work (bad DSN, binlog not ROW/FULL)."""


class SourceAuthError(SourceError):
    """Access denied, or the user lacks the replication grants."""


class SourceUnreachableError(SourceError):
    """The server could not be reached or the connection dropped; worth retrying."""

    fatal = False


class SourcePositionLostError(SourceError):
    """The binlog file of the position is gone (purged); only a re-snapshot or reset helps."""


class SourceDecodeError(SourceError):
    """A binlog event could not be decoded into rows."""
