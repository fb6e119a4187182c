"""A wake-up file descriptor: threads (and signal handlers) nudge the worker loop awake."""

from __future__ import annotations

import os
import queue


class Waker:
    """``set()`` makes ``fileno()`` readable until the loop calls ``clear()``."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._pending = False

    def fileno(self) -> int:
        return self._read_fd

    def set(self) -> None:
        if self._pending:
            return
        self._pending = True
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # already readable

    def clear(self) -> None:
        """Call before scanning for work: a ``set()`` racing with this still wakes that scan."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._pending = False

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A bounded queue that wakes the worker loop when a source thread hands it something."""

    def __init__(self, maxsize: int, wake: Waker) -> None:
        super().__init__(maxsize)
        self.wake = wake

    def _put(self, item: object) -> None:
        super()._put(item)
        self.wake.set()
