"""The one place that opens LMDB. Every process opens its own environment after fork."""

from __future__ import annotations

from pathlib import Path

import lmdb

MAP_SIZE_BYTES = 8 * 1024**3  # address space only; the file stays sparse
MAX_READERS = 2048
SUB_DATABASES = ("specs", "status", "checkpoints", "schemas", "dlq", "meta")
# Beside state/ in --data-dir: the supervisor's report of worker slots that cannot boot, a
# plain file so the api can read it even when LMDB cannot be opened.
WORKER_SLOTS_FILE = "worker-slots.json"


class StateError(Exception):
    """The state directory cannot be opened or read."""


class StateEnv:
    """An open LMDB environment with the project's sub-databases."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.dbs = {name: env.open_db(name.encode()) for name in SUB_DATABASES}

    def close(self) -> None:
        self.env.close()


def open_state(data_dir: Path, readonly: bool = False) -> StateEnv:
    """Open (creating if needed) the state environment under ``data_dir/state``.

    ``readonly`` for the supervisor's reads. LMDB has one writer lock, and a stuck worker may
    hold it for as long as it is stuck. A writable environment's ``open_db`` begins a write
    transaction, so it would wait for that lock, and so would the supervisor, which has to
    notice the worker and kill it. A read-only one opens its sub-databases with a read
    transaction (they must exist: the supervisor imports the specs at boot)."""
    path = data_dir / "state"
    try:
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(
            str(path),
            map_size=MAP_SIZE_BYTES,
            max_readers=MAX_READERS,
            max_dbs=len(SUB_DATABASES) + 2,
            max_spare_txns=0,
            sync=True,
            metasync=True,
            readonly=readonly,
        )
    except (OSError, lmdb.Error) as exc:
        raise StateError(f"cannot open state in {path}: {exc}") from exc
    try:
        env.reader_check()
        return StateEnv(env)
    except lmdb.Error as exc:
        env.close()
        raise StateError(f"cannot open state in {path}: {exc}") from exc
