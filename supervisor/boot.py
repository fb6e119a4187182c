"""Import config-file specs into the desired state (at boot and on SIGHUP), then close state.

Precedence (docs/configuration.md): a file whose content is unchanged since its last import
leaves the API's version in place; a changed file wins with a new generation; a pipeline whose
file disappeared is removed unless it was changed through the API, in which case it stays and
becomes API-owned. State (status, checkpoints, schemas) of pipelines without a spec is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import lmdb

from state.dsn import server_address
from state.env import StateEnv, open_state
from state.records import DesiredStatus, PipelineRecord, StatusRecord
from state.spec import PipelineSpec, encode_spec
from state.stores import SEP, SpecStore, StatusStore
from supervisor.placement import Placeable, load_weight, parse_pin

log = logging.getLogger(__name__)
Desired = dict[str, tuple[int, DesiredStatus]]  # name -> (generation, desired status)
MIN_RATE_WINDOW_S = 10.0  # a shorter run says little about a pipeline's rate


def sync_specs(data_dir: Path, specs: list[PipelineSpec], now: float) -> Desired:
    """Store file specs by the precedence rules; return every pipeline's desired state."""
    state = open_state(data_dir)
    try:
        store = SpecStore(state)
        existing = dict(store.items())
        wanted = {spec.name: encode_spec(spec) for spec in specs}
        with state.env.begin(write=True) as txn:
            for name, body in wanted.items():
                record = imported(existing.get(name), name, body, now)
                if record is not existing.get(name):
                    store.put(name, record, txn)
            for name, record in existing.items():
                if record.origin == "file" and name not in wanted:
                    _file_removed(store, record, txn, now)
            remove_orphaned_state(state, txn)
        return desired_of(store)
    finally:
        state.close()


def read_desired(data_dir: Path) -> Desired:
    """Every pipeline's desired state as stored; state is opened read-only and closed again."""
    state = open_state(data_dir, readonly=True)
    try:
        return desired_of(SpecStore(state))
    finally:
        state.close()


def desired_of(store: SpecStore) -> Desired:
    return {name: (rec.generation, rec.desired) for name, rec in store.items()}


def imported(old: PipelineRecord | None, name: str, body: dict[str, object],
             now: float) -> PipelineRecord:
    """The record after importing ``body`` from a file (``old`` itself when nothing changes)."""
    if old is None:
        return PipelineRecord(name, body, updated_at=now, file_spec=body)
    last_import = old.file_spec
    if last_import is None and old.origin == "file":
        last_import = old.spec  # written before file_spec existed
    if last_import == body:
        if old.file_spec is None:
            return PipelineRecord(name, old.spec, old.desired, old.generation, old.origin,
                                  old.updated_at, file_spec=body)
        return old  # file unchanged since its last import: the API's version stays
    log.info("pipeline config file changed pipeline=%s", name)
    generation = old.generation + 1 if old.spec != body else old.generation
    return PipelineRecord(name, body, old.desired, generation, "file", now, file_spec=body)


def _file_removed(store: SpecStore, record: PipelineRecord, txn: lmdb.Transaction,
                  now: float) -> None:
    if record.file_spec is not None and record.changed_through_api():
        kept = PipelineRecord(record.name, record.spec, record.desired, record.generation, "api",
                              now, file_spec=None)
        store.put(record.name, kept, txn)
        log.warning("pipeline file removed but the pipeline was changed through the API; "
                    "keeping it pipeline=%s", record.name)
        return
    txn.delete(record.name.encode(), db=store.db)
    log.info("pipeline removed from config files pipeline=%s", record.name)


def remove_orphaned_state(state: StateEnv, txn: lmdb.Transaction) -> None:
    """Status, checkpoints and schemas of pipelines that have no spec (deleted while a worker
    was down, or removed from the files) would haunt a new pipeline of the same name."""
    names = {bytes(key).decode() for key, _ in txn.cursor(db=state.dbs["specs"])}
    for db_name in ("status", "checkpoints", "schemas", "dlq"):
        db = state.dbs[db_name]
        orphans = [bytes(key) for key, _ in txn.cursor(db=db)
                   if bytes(key).decode().split(SEP, 1)[0] not in names]
        for key in orphans:
            txn.delete(key, db=db)
        for owner in sorted({key.decode().split(SEP, 1)[0] for key in orphans}):
            log.info("state of a removed pipeline deleted pipeline=%s db=%s", owner, db_name)


def read_placeables(data_dir: Path, names: Iterable[str] | None = None) -> dict[str, Placeable]:
    """What placement needs of each pipeline (all, or ``names``): its server, pin, measured
    load and last slot, read from specs and status; state is closed again before returning."""
    names = None if names is None else list(names)
    if names == []:
        return {}
    state = open_state(data_dir, readonly=True)
    try:
        specs, statuses = SpecStore(state), StatusStore(state)
        if names is None:
            records, status = dict(specs.items()), dict(statuses.items())
        else:
            records = {name: rec for name in names if (rec := specs.get(name)) is not None}
            status = {name: st for name in records if (st := statuses.get(name)) is not None}
        return {name: placeable(rec, status.get(name)) for name, rec in records.items()}
    finally:
        state.close()


def placeable(record: PipelineRecord, status: StatusRecord | None) -> Placeable:
    """A stored spec (valid, so its shape is known) and its last status, as placement input."""
    source = record.spec["spec"]["source"]["config"]
    annotations = record.spec["metadata"].get("annotations", {})
    return Placeable(server=server_address(source["dsn"]),
                     weight=load_weight(events_per_s(status)),
                     pin=parse_pin(record.name, annotations),
                     last_slot=status.worker if status is not None else None)


def events_per_s(status: StatusRecord | None) -> float | None:
    """Average events/s of the pipeline's last run as its worker reported it; None if it
    has not run long enough to tell."""
    if status is None or status.started_at is None:
        return None
    window_s = status.updated_at - status.started_at
    return status.events_total / window_s if window_s >= MIN_RATE_WINDOW_S else None
