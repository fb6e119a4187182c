"""The api's link to the supervisor: one request at a time over the control pipe."""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.connection import Connection
from typing import Any

from api.errors import ApiError

log = logging.getLogger(__name__)
REPLY_TIMEOUT_S = 5.0


class SupervisorLink:
    """Sends a control message and waits for ``("ok",)``; no answer means 503."""

    def __init__(self, conn: Connection | None, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self.conn = conn
        self.timeout_s = timeout_s
        self.lock = asyncio.Lock()  # callers hold it across their state write and the request

    async def request(self, *message: Any) -> None:
        """Deliver ``message``; the caller must hold ``lock``."""
        if self.conn is None:
            raise unavailable("no control connection")
        ok = await asyncio.to_thread(self._exchange, message)
        if not ok:
            raise unavailable(f"no answer within {self.timeout_s:.0f}s")

    def _exchange(self, message: tuple[Any, ...]) -> bool:
        assert self.conn is not None
        try:
            while self.conn.poll():  # a late answer to an earlier request that timed out
                self.conn.recv()
            self.conn.send(message)
            return self.conn.poll(self.timeout_s) and self.conn.recv() == ("ok",)
        except (OSError, EOFError) as exc:
            log.error("supervisor link broken: %s", exc)
            return False


def unavailable(reason: str) -> ApiError:
    return ApiError(503, "SUPERVISOR_UNAVAILABLE",
                    f"the supervisor did not confirm the change ({reason}); the desired state is "
                    "stored and is applied when the supervisor next reads it")
