"""sd_notify over $NOTIFY_SOCKET (a no-op when not run by systemd)."""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> None:
    """Send ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1`` lines to systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            pass
