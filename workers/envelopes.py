"""Envelopes: the JSON a sink writes for one ChangeEvent, in DeltaForge's three formats.

``native`` is DeltaForge's serialized ``Event`` (Debezium payload shape plus its extensions),
``debezium`` wraps it as ``{"schema":null,"payload":<native>}``, ``cloudevents`` is a CloudEvents
1.0 structured event. Field names and order follow DeltaForge's serde output so its consumers
read ours unchanged; docs/envelopes.md shows each shape.

Per event work is one struct build and one msgspec encode: everything that depends only on the
pipeline (version, names, type prefix) is fixed when the encoder is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import metadata

import msgspec

from state.spec import (
    CloudEventsEnvelopeSpec,
    DebeziumEnvelopeSpec,
    EnvelopeSpec,
    NativeEnvelopeSpec,
)
from workers.events import ChangeEvent, Row

EncodeFn = Callable[[ChangeEvent], bytes]

CONNECTOR = "mysql"
CLOUDEVENTS_OP_NAMES = {"c": "created", "u": "updated", "d": "deleted", "r": "snapshot"}

# bytes become base64 strings, ints of any size stay exact, Decimal arrives as a string.
_json = msgspec.json.Encoder()


def source_version() -> str:
    """The ``source.version`` string: ``deltaforge-py-<package version>``."""
    try:
        return f"deltaforge-py-{metadata.version('deltaforge-py')}"
    except metadata.PackageNotFoundError:
        return "deltaforge-py-0.1.0"


class NativeSource(msgspec.Struct, omit_defaults=True):
    """DeltaForge ``SourceInfo`` with the MySQL position flattened in, in its field order."""

    version: str
    connector: str
    name: str
    ts_ms: int
    db: str
    table: str
    snapshot: str | None = None
    server_id: int | None = None
    gtid: str | None = None
    file: str | None = None
    pos: int | None = None


class NativeTransaction(msgspec.Struct):
    id: str


class NativeEvent(msgspec.Struct, omit_defaults=True):
    """DeltaForge ``Event`` as serde writes it: absent optionals omitted, tx_end only if true."""

    before: Row | None
    after: Row | None
    source: NativeSource
    op: str
    ts_ms: int
    transaction: NativeTransaction | None = None
    event_id: str | None = None
    tenant_id: str | None = None
    tx_end: bool = False


class CloudEventData(msgspec.Struct, omit_defaults=True, kw_only=True):
    before: Row | None = None
    after: Row | None = None
    op: str


class CloudEvent(msgspec.Struct, rename={"event_type": "type"}):
    specversion: str
    id: str
    source: str
    event_type: str
    time: str
    datacontenttype: str
    subject: str
    data: CloudEventData


def build_encoder(envelope: EnvelopeSpec, pipeline: str, tenant: str) -> EncodeFn:
    """One encoder function for this envelope and pipeline; call it once per event."""
    if isinstance(envelope, NativeEnvelopeSpec):
        return _native_encoder(pipeline, tenant)
    if isinstance(envelope, DebeziumEnvelopeSpec):
        return _debezium_encoder(pipeline, tenant)
    if isinstance(envelope, CloudEventsEnvelopeSpec):
        return _cloudevents_encoder(pipeline, envelope.type_prefix)
    raise TypeError(f"unknown envelope {envelope!r}")


def native_event(event: ChangeEvent, pipeline: str, tenant: str, version: str) -> NativeEvent:
    """The native struct for one event (also what routing templates resolve against)."""
    source = NativeSource(
        version, CONNECTOR, pipeline, event.ts_ms, event.db, event.table,
        "true" if event.op == "r" else None,
        event.server_id, event.gtid, event.file, event.pos,
    )
    tx = NativeTransaction(event.tx_id) if event.tx_id is not None else None
    return NativeEvent(
        event.before, event.after, source, event.op, event.ts_ms, tx,
        event.event_id, tenant, event.tx_end,
    )


def _native_encoder(pipeline: str, tenant: str) -> EncodeFn:
    """``native_event`` encoded, spliced from parts: the images, the event id, and the part
    every row of one rows event shares (source, op, ts_ms, transaction), encoded once per
    rows event. Byte for byte what encoding the ``NativeEvent`` struct gives."""
    version = source_version()
    encode = _json.encode
    tenant_part = b',"tenant_id":' + encode(tenant)
    last_key: tuple[object, ...] | None = None
    shared = b""

    def encode_native(event: ChangeEvent) -> bytes:
        nonlocal last_key, shared
        key = (event.pos, event.file, event.ts_ms, event.op, event.db, event.table,
               event.server_id, event.gtid, event.tx_id)
        if key != last_key:
            shared = _shared_part(event, pipeline, version)
            last_key = key
        return b"".join((
            b'{"before":', encode(event.before), b',"after":', encode(event.after), shared,
            b',"event_id":', encode(event.event_id), tenant_part,
            b',"tx_end":true}' if event.tx_end else b"}",
        ))

    return encode_native


def _shared_part(event: ChangeEvent, pipeline: str, version: str) -> bytes:
    """``,"source":{..},"op":..,"ts_ms":..[,"transaction":{..}]`` of the native envelope."""
    native = native_event(event, pipeline, "", version)
    encode = _json.encode
    transaction = b"" if native.transaction is None else (
        b',"transaction":' + encode(native.transaction))
    return (b',"source":' + encode(native.source) + b',"op":' + encode(native.op)
            + b',"ts_ms":' + encode(native.ts_ms) + transaction)


def _debezium_encoder(pipeline: str, tenant: str) -> EncodeFn:
    encode_native = _native_encoder(pipeline, tenant)

    def encode_debezium(event: ChangeEvent) -> bytes:
        return b'{"schema":null,"payload":' + encode_native(event) + b"}"

    return encode_debezium


def _cloudevents_encoder(pipeline: str, type_prefix: str) -> EncodeFn:
    """CloudEvents 1.0 structured JSON; absent images are left out of ``data``, as in DeltaForge."""
    encode = _json.encode
    types = {op: f"{type_prefix}.{name}" for op, name in CLOUDEVENTS_OP_NAMES.items()}
    format_time = _rfc3339_millis_formatter()
    names: dict[tuple[str, str], tuple[str, str]] = {}

    def table_names(db: str, table: str) -> tuple[str, str]:
        full_name = f"{db}.{table}"
        found = names[(db, table)] = (f"deltaforge/{pipeline}/{full_name}", full_name)
        return found

    def encode_cloudevent(event: ChangeEvent) -> bytes:
        source, subject = names.get((event.db, event.table)) or table_names(event.db, event.table)
        return encode(CloudEvent(
            "1.0", event.event_id, source, types[event.op], format_time(event.ts_ms),
            "application/json", subject,
            CloudEventData(before=event.before, after=event.after, op=event.op),
        ))

    return encode_cloudevent


def _rfc3339_millis_formatter() -> Callable[[int], str]:
    """``ts_ms`` -> ``2024-01-15T10:30:00.000Z``; the seconds part is cached (events cluster)."""
    cached_second = -1
    cached_prefix = ""

    def format_time(ts_ms: int) -> str:
        nonlocal cached_second, cached_prefix
        second, millis = divmod(ts_ms, 1000)
        if second != cached_second:
            cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cached_second = second
        return f"{cached_prefix}.{millis:03d}Z"

    return format_time
