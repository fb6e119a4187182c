"""sd_notify over $NOTIFY_SOCKET: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

A no-op when the service is not run by systemd (no ``NOTIFY_SOCKET``). The supervisor takes the
variables out of its environment at start, as ``sd_notify(unset_environment=1)`` does, so that
the children it forks never notify on its behalf.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

STATUS_MIN_INTERVAL_S = 3.0  # systemd keeps the last STATUS; more often is noise


class Notifier:
    """The supervisor's messages to systemd; the watchdog ping is due every half interval."""

    def __init__(self, address: str | None, watchdog_interval_s: float | None) -> None:
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval_s = watchdog_interval_s
        self.next_ping_at = time.monotonic()
        self.last_status: str | None = None
        self.status_sent_at = float("-inf")

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None,
                     pid: int | None = None) -> Notifier:
        """Read and remove NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``environ``."""
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec, watchdog_pid = env.pop("WATCHDOG_USEC", ""), env.pop("WATCHDOG_PID", "")
        ours = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None
        return cls(address, interval_s if address else None)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self.address)
            except OSError:
                pass  # systemd gone or socket full: nothing useful to do about it

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")
        self.last_status, self.status_sent_at = status, time.monotonic()

    def status(self, text: str, now: float) -> None:
        """Send ``text`` when it differs from the last STATUS, at most every few seconds."""
        if text != self.last_status and now - self.status_sent_at >= STATUS_MIN_INTERVAL_S:
            self.send(f"STATUS={text}")
            self.last_status, self.status_sent_at = text, now

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading config")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining")
        self.last_status = "draining"

    def ping_watchdog(self, now: float) -> None:
        """WATCHDOG=1 when due; call it from the loop only, so a stuck loop stops the pings."""
        if self.watchdog_interval_s is None or now < self.next_ping_at:
            return
        self.send("WATCHDOG=1")
        self.next_ping_at = now + self.watchdog_interval_s

    def next_ping_in_s(self, now: float) -> float | None:
        if self.watchdog_interval_s is None:
            return None
        return max(0.0, self.next_ping_at - now)
