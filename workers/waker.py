"""A wake-up file descriptor: threads (and signal handlers) nudge the worker loop awake, and
say which pipeline has work, so the loop steps that one rather than all of them."""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from typing import Protocol


class Wake(Protocol):
    def set(self) -> None: ...


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


class ReadyPipelines:
    """Names of pipelines that have work, appended from any thread, taken by the loop."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self._names: deque[str] = deque()  # append and popleft are atomic: no lock needed

    def waker_for(self, name: str) -> PipelineWaker:
        return PipelineWaker(name, self)

    def mark(self, name: str) -> None:
        self._names.append(name)
        self.waker.set()

    def take(self) -> set[str]:
        names: set[str] = set()
        while True:
            try:
                names.add(self._names.popleft())
            except IndexError:
                return names


class PipelineWaker:
    """Wakes the loop for one pipeline."""

    def __init__(self, name: str, ready: ReadyPipelines) -> None:
        self.name = name
        self.ready = ready

    def set(self) -> None:
        self.ready.mark(self.name)


class WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A bounded queue that wakes the worker loop when a source thread hands it something,
    and remembers when its consumer last took an item (``taken_at``, monotonic; a new queue
    counts as just taken from, so a pipeline that just started is not taken for a stuck one).

    ``put_nowait`` and ``get_nowait``, called for every source transaction, take the queue's
    lock directly instead of going through its conditions, and notify only a thread that
    waits (``put`` with a timeout waits for room as usual). ``task_done``/``join`` are not
    supported: nothing counts unfinished items."""

    def __init__(self, maxsize: int, wake: Wake) -> None:
        self.taken_at = time.monotonic()
        super().__init__(maxsize)
        self.wake = wake

    def put_nowait(self, item: object) -> None:
        with self.mutex:
            if 0 < self.maxsize <= len(self.queue):
                raise queue.Full
            self.queue.append(item)
            if self.not_empty._waiters:  # type: ignore[attr-defined]
                self.not_empty.notify()
        self.wake.set()

    def get_nowait(self) -> object:
        with self.mutex:
            if not self.queue:
                raise queue.Empty
            item = self.queue.popleft()
            if self.not_full._waiters:  # type: ignore[attr-defined]
                self.not_full.notify()
        self.taken_at = time.monotonic()
        return item

    def _put(self, item: object) -> None:
        super()._put(item)
        self.wake.set()

    def _get(self) -> object:
        self.taken_at = time.monotonic()
        return super()._get()
