"""Is a checkpoint's position still on this server? Checked before a pipeline resumes.

A purged binlog file, a different server behind the same address (new server id) or a
server that never executed the checkpoint's GTIDs (restored or replaced) all mean the position
is lost: resuming would silently skip or replay the wrong data, so the pipeline fails instead.
"""

from __future__ import annotations

from typing import Any

from state.records import BinlogPosition
from state.spec import MysqlConfigSpec
from workers.source.connection import server_session
from workers.source.dsn import MysqlDsn
from workers.source.errors import SourcePositionLostError

REMEDY = ("re-snapshot the tables, or reset the position by deleting and re-creating the "
          "pipeline (it then starts at the current binlog end)")


def verify_position(config: MysqlConfigSpec, position: BinlogPosition) -> None:
    """Raise ``SourcePositionLostError`` saying what happened when ``position`` is unusable."""
    with server_session(config) as (conn, dsn), conn.cursor() as cur:
        _check_file(cur, dsn, position)
        _check_server_id(cur, dsn, position)
        _check_gtids(cur, conn.get_server_info(), dsn, position)


def _check_file(cur: Any, dsn: MysqlDsn, position: BinlogPosition) -> None:
    cur.execute("SHOW BINARY LOGS")
    files = [str(row[0]) for row in cur.fetchall()]
    if position.file not in files:
        oldest = files[0] if files else "none"
        raise SourcePositionLostError(
            f"checkpoint {position} is not on {dsn.address}: binlog file {position.file} is "
            f"gone (purged, or a different server; oldest file now {oldest}); {REMEDY}")


def _check_server_id(cur: Any, dsn: MysqlDsn, position: BinlogPosition) -> None:
    cur.execute("SELECT @@server_id")
    server_id = int(cur.fetchone()[0])
    if position.server_id is not None and position.server_id != server_id:
        raise SourcePositionLostError(
            f"server identity changed: checkpoint {position} was taken on server_id "
            f"{position.server_id}, {dsn.address} is server_id {server_id}; {REMEDY}")


def _check_gtids(cur: Any, server_info: str, dsn: MysqlDsn, position: BinlogPosition) -> None:
    if not position.gtid_set:
        return
    if "mariadb" in server_info.lower():
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        reachable = mariadb_gtids_reachable(position.gtid_set, str(cur.fetchone()[0] or ""))
    else:
        cur.execute("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (position.gtid_set,))
        reachable = bool(cur.fetchone()[0])
    if not reachable:
        raise SourcePositionLostError(
            f"server identity changed: {dsn.address} never executed the checkpoint's GTIDs "
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
