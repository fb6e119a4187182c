"""Boot: import config-file specs into the desired state, then close state before forking."""

from __future__ import annotations

import logging
from pathlib import Path

from state.env import open_state
from state.records import PipelineRecord
from state.spec import PipelineSpec, encode_spec
from state.stores import SpecStore

log = logging.getLogger(__name__)


def sync_specs(data_dir: Path, specs: list[PipelineSpec], now: float) -> dict[str, int]:
    """Store file specs (a changed spec gets a new generation; a file-defined pipeline whose
    file is gone is removed) and return the pipelines to run with their generations."""
    state = open_state(data_dir)
    try:
        store = SpecStore(state)
        existing = dict(store.items())
        wanted = {spec.name: spec for spec in specs}
        with state.env.begin(write=True) as txn:
            for name, spec in wanted.items():
                store.put(name, _merged(existing.get(name), spec, now), txn)
            for name, record in existing.items():
                if record.origin == "file" and name not in wanted:
                    txn.delete(name.encode(), db=store.db)
                    log.info("pipeline removed from config files pipeline=%s", name)
        return {name: rec.generation for name, rec in store.items() if rec.desired == "running"}
    finally:
        state.close()


def _merged(old: PipelineRecord | None, spec: PipelineSpec, now: float) -> PipelineRecord:
    body = encode_spec(spec)
    if old is None:
        return PipelineRecord(spec.name, body, updated_at=now)
    if old.spec == body:
        return old
    return PipelineRecord(spec.name, body, old.desired, old.generation + 1, "file", now)
