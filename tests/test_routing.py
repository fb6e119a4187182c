"""Topic templates resolve strictly, key templates leniently; default keys are primary keys."""

from __future__ import annotations

from typing import Any

import pytest

from state.records import BinlogPosition
from workers.events import ChangeEvent
from workers.routing import TemplateError, compile_key, compile_topic, default_key
from workers.sinks.errors import RoutingError, SinkError


def make_event(**changes: Any) -> ChangeEvent:
    fields: dict[str, Any] = dict(
        event_id="7:bin.000001:100:0", op="u", db="shop", table="orders",
        before={"id": 42, "region": "eu", "blob": b"\x01"},
        after={"id": 42, "region": "us", "meta": {"zone": "b"}, "blob": b"\x00\xff"},
        primary_key=("id",), ts_ms=1700000000000, server_id=7, file="bin.000001", pos=100,
        gtid=None, tx_id="tx-1", position=BinlogPosition("bin.000001", 100), tx_end=True,
        size_bytes=10,
    )
    fields.update(changes)
    return ChangeEvent(**fields)


def topic(template: str, event: ChangeEvent | None = None) -> str:
    return compile_topic(template, "orders-db", "acme")(event or make_event())


def key(template: str | None, event: ChangeEvent | None = None) -> str:
    return compile_key(template, "orders-db", "acme")(event or make_event())


@pytest.mark.parametrize(("template", "expected"), [
    ("static-topic", "static-topic"),
    ("cdc.${source.db}.${source.table}", "cdc.shop.orders"),
    ("${tenant_id}.${source.table}.${op}", "acme.orders.u"),
    ("${source.connector}-${source.name}", "mysql-orders-db"),
    ("by-region.${after.region}", "by-region.us"),
    ("old.${before.region}", "old.eu"),
    ("${after.meta.zone}", "b"),
    ("n${after.id}n", "n42n"),
    ("${after.blob}", "AP8="),
    ("${transaction.id}.${source.server_id}.${source.file}", "tx-1.7.bin.000001"),
])
def test_topic_templates(template: str, expected: str) -> None:
    assert topic(template) == expected


def test_per_table_topics_follow_the_event() -> None:
    render = compile_topic("cdc.${source.db}.${source.table}.${op}", "p", "t")
    assert render(make_event()) == "cdc.shop.orders.u"
    assert render(make_event(table="items", op="c")) == "cdc.shop.items.c"
    assert render(make_event()) == "cdc.shop.orders.u"


@pytest.mark.parametrize(("template", "variable"), [
    ("x.${after.missing}", "after.missing"),
    ("x.${after.meta.missing}", "after.meta.missing"),
    ("x.${after.region.sub}", "after.region.sub"),
    ("${source.db}.${source.gtid}", "source.gtid"),
    ("${source.schema}", "source.schema"),
])
def test_topic_is_strict_and_names_template_and_variable(template: str, variable: str) -> None:
    with pytest.raises(RoutingError) as caught:
        topic(template)
    assert caught.value.template == template
    assert caught.value.variable == variable
    assert template in str(caught.value) and variable in str(caught.value)
    assert isinstance(caught.value, SinkError)


def test_topic_null_value_is_unresolved() -> None:
    event = make_event(after={"id": 1, "region": None})
    with pytest.raises(RoutingError, match="after.region"):
        topic("t.${after.region}", event)


def test_delete_has_no_after_image_for_topic() -> None:
    event = make_event(op="d", after=None)
    with pytest.raises(RoutingError, match="after.region"):
        topic("t.${after.region}", event)
    assert topic("t.${before.region}", event) == "t.eu"


def test_empty_topic_is_an_error() -> None:
    with pytest.raises(RoutingError, match="empty"):
        topic("${after.region}", make_event(after={"id": 1, "region": ""}))


@pytest.mark.parametrize("template", ["a.${source.db", "x.${}", "${a.b.c.d}", "${nope}",
                                      "${source.nope}", "${after}"])
def test_bad_templates_fail_at_compile_time(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_topic(template, "p", "t")
    with pytest.raises(TemplateError):
        compile_key(template, "p", "t")


def test_key_template_is_lenient() -> None:
    assert key("${after.region}/${after.missing}/${source.gtid}") == "us//"
    assert key("${after.id}", make_event(op="d", after=None)) == ""
    assert key("fixed") == "fixed"


def test_default_key_single_column_is_value_text() -> None:
    assert key(None) == "42"
    assert default_key(make_event(after={"id": "abc"}, primary_key=("id",))) == "abc"
    assert default_key(make_event(after={"id": b"\x00\xff"})) == "AP8="
    assert default_key(make_event(after={"id": 18446744073709551615})) == "18446744073709551615"


def test_default_key_composite_is_json_array() -> None:
    event = make_event(after={"a": 1, "b": "x", "c": b"\x00"}, primary_key=("a", "b", "c"))
    assert default_key(event) == '[1,"x","AA=="]'


def test_default_key_without_primary_key_is_table_name() -> None:
    assert default_key(make_event(primary_key=())) == "shop.orders"


def test_default_key_same_for_insert_update_delete() -> None:
    row = {"id": 9, "v": 1}
    events = [make_event(op="c", before=None, after=row),
              make_event(op="u", before=row, after={"id": 9, "v": 2}),
              make_event(op="d", before=row, after=None)]
    assert {default_key(event) for event in events} == {"9"}


def test_default_key_uses_before_when_minimal_after_lacks_key() -> None:
    event = make_event(before={"id": 5}, after={"v": 3})  # binlog_row_image=MINIMAL update
    assert default_key(event) == "5"
