"""The executed GTID set a position carries: MariaDB ``d-s-n`` per domain, MySQL ``uuid:1-N``."""

from __future__ import annotations

from pymysqlreplication.gtid import Gtid, GtidSet


class GtidTracker:
    """Tracks the GTID of the open transaction and the executed set up to the last boundary."""

    def __init__(self, start: str | None) -> None:
        self._mariadb: dict[int, str] = {}
        self._mysql: GtidSet | None = None
        self.pending: str | None = None
        self._text = start or None
        if start and ":" in start:
            self._mysql = GtidSet(start)
        elif start:
            self._mariadb = {int(g.split("-")[0]): g.strip() for g in start.split(",") if g.strip()}

    @property
    def executed(self) -> str | None:
        """The executed set at the last transaction boundary (None when the server has none)."""
        return self._text

    def begin(self, gtid: str) -> None:
        self.pending = gtid

    def commit(self) -> None:
        """The open transaction ended: merge its GTID into the executed set."""
        gtid, self.pending = self.pending, None
        if gtid is None:
            return
        if ":" in gtid:
            self._merge_mysql(gtid)
        else:
            mariadb = self._mariadb
            mariadb[int(gtid.split("-", 1)[0])] = gtid
            if len(mariadb) == 1:
                self._text = gtid
            else:
                self._text = ",".join(mariadb[d] for d in sorted(mariadb))

    def _merge_mysql(self, gtid: str) -> None:
        if self._mysql is None:
            self._mysql = GtidSet(None)
        self._mysql.merge_gtid(Gtid(gtid))
        self._text = str(self._mysql).replace("\n", "")
