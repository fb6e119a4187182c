"""Is a checkpoint's position still on this server? Checked before a pipeline resumes.

A purged binlog file, a different server behind the same address (new server id) or a
server that never executed the checkpoint's GTIDs (restored or replaced) all mean the position
is lost: resuming would silently skip or replay the wrong data, so the pipeline fails instead.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.source.connection import server_session
from workers.source.dsn import parse_dsn
from workers.source.errors import SourcePositionLostError

REMEDY = ("re-snapshot the tables, or reset the position by deleting and re-creating the "
          "pipeline (it then starts at the current binlog end)")


FACTS_TTL_S = 2.0  # a fact older than this is fetched again before it is relied on


@dataclass(frozen=True)
class ServerFacts:
    """What a position is checked against, read in one control session."""

    files: tuple[str, ...]
    server_id: int
    mariadb: bool
    gtid_binlog_pos: str  # MariaDB's; MySQL's GTIDs are checked by the server itself
    fetched_at: float


_facts: dict[str, ServerFacts] = {}  # by DSN: the credentials are part of what is checked
_fetching: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def verify_position(config: MysqlConfigSpec, position: BinlogPosition) -> None:
    """Raise ``SourcePositionLostError`` saying what happened when ``position`` is unusable.

    A worker starting 150 pipelines of one server would open 150 control sessions (TLS
    handshake, login, three queries) for the same answers; so the answers are shared for
    ``FACTS_TTL_S`` by pipelines with the same DSN. Only a yes is taken from shared facts: a
    position they cannot confirm (a newer file or GTID than they saw) is checked again against
    fresh ones before the pipeline fails.
    """
    facts = _recent_facts(config)
    if facts is None or _problem(facts, config, position) is not None:
        facts = _fetch_facts(config)
    problem = _problem(facts, config, position)
    if problem is not None:
        raise problem
    if position.gtid_set and not facts.mariadb:
        with server_session(config) as (conn, dsn), conn.cursor() as cur:
            cur.execute("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (position.gtid_set,))
            if not cur.fetchone()[0]:
                raise _gtids_unreachable(dsn, position)


def _recent_facts(config: MysqlConfigSpec) -> ServerFacts | None:
    facts = _facts.get(config.dsn)
    if facts is None or time.monotonic() - facts.fetched_at > FACTS_TTL_S:
        return None
    return facts


def _fetch_facts(config: MysqlConfigSpec) -> ServerFacts:
    """Fresh facts; concurrent callers for one DSN share a single fetch."""
    with _guard:
        lock = _fetching.setdefault(config.dsn, threading.Lock())
    asked_at = time.monotonic()
    with lock:
        facts = _facts.get(config.dsn)
        if facts is not None and facts.fetched_at >= asked_at:
            return facts  # fetched by another caller while this one waited
        with server_session(config) as (conn, _), conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            files = tuple(str(row[0]) for row in cur.fetchall())
            cur.execute("SELECT @@server_id")
            server_id = int(cur.fetchone()[0])
            mariadb = "mariadb" in conn.get_server_info().lower()
            gtids = ""
            if mariadb:
                cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
                gtids = str(cur.fetchone()[0] or "")
        facts = ServerFacts(files, server_id, mariadb, gtids, time.monotonic())
        _facts[config.dsn] = facts
        return facts


def _problem(facts: ServerFacts, config: MysqlConfigSpec, position: BinlogPosition
             ) -> SourcePositionLostError | None:
    address = parse_dsn(config.dsn).address
    if position.file not in facts.files:
        oldest = facts.files[0] if facts.files else "none"
        return SourcePositionLostError(
            f"checkpoint {position} is not on {address}: binlog file {position.file} is "
            f"gone (purged, or a different server; oldest file now {oldest}); {REMEDY}")
    if position.server_id is not None and position.server_id != facts.server_id:
        return SourcePositionLostError(
            f"server identity changed: checkpoint {position} was taken on server_id "
            f"{position.server_id}, {address} is server_id {facts.server_id}; {REMEDY}")
    if position.gtid_set and facts.mariadb and not mariadb_gtids_reachable(
            position.gtid_set, facts.gtid_binlog_pos):
        return _gtids_unreachable(address, position)
    return None


def _gtids_unreachable(address: Any, position: BinlogPosition) -> SourcePositionLostError:
    return SourcePositionLostError(
        f"server identity changed: {address} never executed the checkpoint's GTIDs "
        f"{position.gtid_set} (a restored or replaced server); {REMEDY}")


def mariadb_gtids_reachable(checkpoint: str, server: str) -> bool:
    """Every domain of ``checkpoint`` (``D-S-N,...``) is at sequence N or beyond on the server."""
    have = {domain: seq for domain, _, seq in _mariadb_gtids(server)}
    return all(have.get(domain, -1) >= seq for domain, _, seq in _mariadb_gtids(checkpoint))


def _mariadb_gtids(text: str) -> list[tuple[int, int, int]]:
    gtids = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        domain, server_id, seq = (int(x) for x in part.split("-"))
        gtids.append((domain, server_id, seq))
    return gtids
