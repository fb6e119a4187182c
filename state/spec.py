"""Pipeline specs in DeltaForge's YAML format, decoded into typed, frozen structs.

Every user-facing struct forbids unknown fields so a typo is an error with its path, e.g.
``Object contains unknown field `max_event` - at `$.spec.batch` ``.
"""

from __future__ import annotations

import re
import zlib
from typing import Annotated, Any, Literal

import msgspec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
PipelineName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
SinkId = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class SpecError(ValueError):
    """A spec that cannot be used; ``path`` points into the document (``$.spec.batch``)."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} - at `{self.path}`" if self.path != "$" else self.message


class _UserSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Metadata(_UserSpec, frozen=True):
    name: PipelineName
    tenant: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class MysqlConfigSpec(_UserSpec, frozen=True):
    id: str
    dsn: str
    tables: list[str] = []
    server_id: Annotated[int, msgspec.Meta(ge=1, le=4294967295)] | None = None
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0

    def effective_server_id(self) -> int:
        """``server_id`` or, as DeltaForge does, ``1 + CRC32(id) % 4_000_000_000``."""
        if self.server_id is not None:
            return self.server_id
        return 1 + zlib.crc32(self.id.encode()) % 4_000_000_000


class MysqlSourceSpec(_UserSpec, frozen=True, tag="mysql", tag_field="type"):
    config: MysqlConfigSpec


class NativeEnvelopeSpec(_UserSpec, frozen=True, tag="native", tag_field="type"):
    pass


class DebeziumEnvelopeSpec(_UserSpec, frozen=True, tag="debezium", tag_field="type"):
    pass


class CloudEventsEnvelopeSpec(_UserSpec, frozen=True, tag="cloudevents", tag_field="type"):
    type_prefix: str = "deltaforge"


EnvelopeSpec = NativeEnvelopeSpec | DebeziumEnvelopeSpec | CloudEventsEnvelopeSpec
EnvelopeName = Literal["native", "debezium", "cloudevents"]


class KafkaConfigSpec(_UserSpec, frozen=True):
    id: SinkId
    brokers: str
    topic: str
    key: str | None = None
    envelope: EnvelopeName | EnvelopeSpec = "native"
    encoding: Literal["json"] = "json"
    required: bool = True
    exactly_once: bool = False
    checkpoint_topic: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,249}$")] = (
        "deltaforge.checkpoints"
    )
    send_timeout_secs: PositiveInt = 30
    client_conf: dict[str, str | int | float | bool] = {}

    def envelope_spec(self) -> EnvelopeSpec:
        """The envelope as a struct, whether it was written as a name or as ``{type: ...}``."""
        if isinstance(self.envelope, str):
            by_name: dict[str, EnvelopeSpec] = {
                "native": NativeEnvelopeSpec(),
                "debezium": DebeziumEnvelopeSpec(),
                "cloudevents": CloudEventsEnvelopeSpec(),
            }
            return by_name[self.envelope]
        return self.envelope


class KafkaSinkSpec(_UserSpec, frozen=True, tag="kafka", tag_field="type"):
    config: KafkaConfigSpec


class BatchSpec(_UserSpec, frozen=True):
    max_events: PositiveInt = 2000
    max_bytes: PositiveInt = 16 * 1024 * 1024
    max_ms: PositiveInt = 50
    respect_source_tx: bool = True
    max_inflight: PositiveInt = 4


class CommitPolicySpec(_UserSpec, frozen=True):
    mode: Literal["required", "all", "quorum"] = "required"
    quorum: PositiveInt | None = None


class DlqSpec(_UserSpec, frozen=True):
    max_entries: PositiveInt = 10_000
    max_age_secs: Annotated[int, msgspec.Meta(ge=0)] = 604_800  # 0: no age limit
    overflow_policy: Literal["drop_oldest", "reject", "block"] = "drop_oldest"


class JournalSpec(_UserSpec, frozen=True):
    """The dead-letter queue: events a sink rejects (routing, serialization, too large)."""

    enabled: bool = False
    max_event_bytes: PositiveInt = 262_144
    dlq: DlqSpec = DlqSpec()


class PipelineBody(_UserSpec, frozen=True):
    source: MysqlSourceSpec
    sinks: Annotated[list[KafkaSinkSpec], msgspec.Meta(min_length=1)]
    processors: list[dict[str, Any]] = []
    batch: BatchSpec = BatchSpec()
    commit_policy: CommitPolicySpec = CommitPolicySpec()
    journal: JournalSpec = JournalSpec()


class PipelineSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """One pipeline document: ``apiVersion``, ``kind``, ``metadata``, ``spec``."""

    metadata: Metadata
    spec: PipelineBody
    api_version: Literal["deltaforge/v1"] = "deltaforge/v1"
    kind: Literal["Pipeline"] = "Pipeline"

    @property
    def name(self) -> str:
        return self.metadata.name

    def sink_ids(self) -> list[str]:
        return [sink.config.id for sink in self.spec.sinks]


def decode_spec(document: Any) -> PipelineSpec:
    """Decode a parsed YAML/JSON document into a checked ``PipelineSpec``."""
    try:
        spec = msgspec.convert(document, PipelineSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise SpecError(*_split_msgspec_error(str(exc))) from None
    check_semantics(spec)
    return spec


def check_semantics(spec: PipelineSpec) -> None:
    """Rules a type cannot express: unique sink ids, a reachable quorum, supported processors."""
    ids = spec.sink_ids()
    for index, sink_id in enumerate(ids):
        if sink_id in ids[:index]:
            raise SpecError(f"duplicate sink id {sink_id!r}", f"$.spec.sinks[{index}].config.id")
    policy = spec.spec.commit_policy
    if policy.mode == "quorum" and (policy.quorum is None or policy.quorum > len(ids)):
        raise SpecError(
            f"quorum must be between 1 and the number of sinks ({len(ids)})",
            "$.spec.commit_policy.quorum",
        )
    if spec.spec.processors:
        kind = spec.spec.processors[0].get("type", "?")
        raise SpecError(f"processor type {kind!r} is not supported", "$.spec.processors[0]")
    for index, pattern in enumerate(spec.spec.source.config.tables):
        if not re.fullmatch(r"[^.\s]+\.[^.\s]+", pattern):
            raise SpecError(
                f"table pattern {pattern!r} must look like db.table, db.* or db.prefix%",
                f"$.spec.source.config.tables[{index}]",
            )


def encode_spec(spec: PipelineSpec) -> dict[str, Any]:
    """The spec as plain builtins (for JSON responses and persisted records)."""
    return msgspec.to_builtins(spec)  # type: ignore[no-any-return]


def _split_msgspec_error(text: str) -> tuple[str, str]:
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        return text, "$"
    return message, path.rstrip("`")
