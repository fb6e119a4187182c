"""A config reload (SIGHUP) runs in a short-lived child process.

Importing the files writes LMDB, and a write waits for LMDB's one writer lock. A stuck worker
can hold that lock until the supervisor kills it, so the supervisor must not wait for the
lock itself: its loop goes on (heartbeats, reaping, API requests) while the child waits. The
child only writes; the supervisor reads the desired state afterwards, so API changes made
meanwhile are not overwritten by an older snapshot.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from state.env import StateError
from supervisor.boot import sync_specs
from supervisor.config_files import file_specs

log = logging.getLogger(__name__)
CTX = multiprocessing.get_context("fork")
EXIT_WAIT_S = 5.0  # for the child to exit once it has answered


@dataclass
class Reload:
    """A running reload child and the pipe its outcome comes on."""

    process: Any
    conn: Connection

    def waitables(self) -> list[Any]:
        return [self.conn, self.process.sentinel]

    def outcome(self) -> str | None:
        """None while the child works; then "" when the import succeeded, else why it failed.
        The child is reaped once it has answered (or died without answering)."""
        if self.conn.poll():
            try:
                ok, error = self.conn.recv()
            except (EOFError, OSError):
                ok, error = False, None
        elif self.process.is_alive():
            return None
        else:
            ok, error = False, None
        self.end()
        if ok:
            return ""
        return error or f"the reload process exited with code {self.process.exitcode}"

    def end(self, grace_s: float = EXIT_WAIT_S) -> None:
        """Reap the child, killing it if it has not exited within ``grace_s``."""
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def start_reload(config: Path, data_dir: Path) -> Reload:
    """Fork the child that imports ``config`` into the state under ``data_dir``; OSError if
    the fork fails."""
    parent_conn, child_conn = CTX.Pipe(duplex=False)
    process = CTX.Process(target=import_config_files, args=(config, data_dir, child_conn),
                          name="reload", daemon=False)
    try:
        process.start()
    finally:
        child_conn.close()
    return Reload(process, parent_conn)


def import_config_files(config: Path, data_dir: Path, conn: Connection) -> None:
    """In the child: import the files with the boot rules, answer (ok, error), exit."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)  # the supervisor's handlers wake the supervisor
    try:
        sync_specs(data_dir, file_specs(config), time.time())
        conn.send((True, None))
    except (OSError, ValueError, StateError) as exc:
        conn.send((False, str(exc)))
    finally:
        conn.close()
        logging.shutdown()  # its log records reach the supervisor before it exits
