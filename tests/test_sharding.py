"""Placement of pipelines on worker slots: sticky under churn, server-aware, balanced by load,
pins honoured, and the same result after a supervisor restart."""

from __future__ import annotations

import logging
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from state.dsn import server_address
from state.records import StatusRecord
from supervisor.boot import Desired, events_per_s
from supervisor.desired import Moves, routed_changes
from supervisor.placement import (
    PIN_ANNOTATION,
    Placeable,
    Placement,
    boot_placement,
    load_weight,
    parse_pin,
)
from tests.support.pipelines import pipeline_yaml, unique, write_config
from tests.support.service import Service


def fleet(servers: int, per_server: int, weight: float = 1.0) -> dict[str, Placeable]:
    return {f"s{s}-p{i:03d}": Placeable(f"db{s}:3306", weight)
            for s in range(servers) for i in range(per_server)}


def placed(servers: int, per_server: int, slots: int) -> Placement:
    placement = Placement(slots)
    placement.place_many(fleet(servers, per_server))
    return placement


def streams(placement: Placement) -> int:
    """Binlog streams the workers open: one per distinct server per slot."""
    return sum(len(servers) for servers in placement.servers)


def test_many_pipelines_are_balanced_over_slots() -> None:
    placement = placed(3, 100, 4)
    assert placement.loads == [75.0] * 4
    assert set(Counter(placement.placed.values())) == {0, 1, 2, 3}


@pytest.mark.parametrize("slots", [2, 3, 4, 6])
def test_servers_are_split_over_as_few_slots_as_balance_allows(slots: int) -> None:
    placement = placed(3, 100, slots)
    assert streams(placement) <= 3 + slots - 1  # at most one split per slot boundary
    assert max(placement.loads) - min(placement.loads) <= 1


def test_adding_or_removing_one_pipeline_moves_no_other() -> None:
    placement = placed(3, 40, 3)
    before = dict(placement.placed)
    placement.place("new", Placeable("db1:3306"))
    assert {name: placement.placed[name] for name in before} == before
    placement.remove("s0-p007")
    placement.remove("new")
    assert placement.placed == {n: s for n, s in before.items() if n != "s0-p007"}


def test_churn_moves_nothing_and_stays_balanced() -> None:
    rng = random.Random(7)
    placement = Placement(3)
    for step in range(600):
        name = f"p{rng.randrange(150)}"
        before = dict(placement.placed)
        if name in before:
            placement.remove(name)
        else:
            placement.place(name, Placeable(f"db{rng.randrange(4)}:3306",
                                            rng.choice([1.0, 1.0, 3.0])))
        assert all(placement.placed[n] == s for n, s in before.items() if n != name), step
    assert placement.balanced()


def test_a_new_pipeline_joins_a_slot_reading_its_server() -> None:
    placement = Placement(3)
    placement.place_many({"a1": Placeable("db-a:3306"), "b1": Placeable("db-b:3306"),
                          "c1": Placeable("db-c:3306")})
    a_slot = placement.placed["a1"]
    placement.place("a2", Placeable("db-a:3306"))  # its slot is a bit above average: fine
    assert placement.placed["a2"] == a_slot
    for i in range(3, 10):
        placement.place(f"a{i}", Placeable("db-a:3306"))
    assert placement.balanced()  # beyond the tolerance the server is split


def test_load_spread_with_very_different_weights_is_bounded() -> None:
    rng = random.Random(3)
    pipelines = {f"p{i}": Placeable(f"db{rng.randrange(5)}:3306",
                                    load_weight(rng.choice([0, 0, 0, 20, 100, 400])))
                 for i in range(120)}
    placement = Placement(3)
    placement.place_many(pipelines)
    heaviest = max(p.weight for p in pipelines.values())
    average = sum(placement.loads) / 3
    assert max(placement.loads) <= 1.25 * average + heaviest
    assert min(placement.loads) >= 0.75 * average - heaviest
    assert max(placement.loads) / min(placement.loads) < 1.5
    by_count = Placement(3)  # the same pipelines, placed as if unmeasured
    by_count.place_many({name: Placeable(p.server) for name, p in pipelines.items()})
    real = [sum(pipelines[name].weight for name in names) for names in by_count.members]
    assert max(real) / min(real) > 1.5


def test_one_by_one_placement_stays_balanced_by_weight() -> None:
    rng = random.Random(5)
    placement = Placement(3)
    for i in range(90):
        placement.place(f"p{i}", Placeable(f"db{i % 3}:3306", rng.choice([1.0, 2.0, 9.0])))
    assert placement.balanced()


def test_pin_is_honoured_and_a_changed_pin_moves_only_that_pipeline() -> None:
    pipelines = fleet(2, 30)
    pipelines["s0-p000"] = Placeable("db0:3306", pin=2)
    placement = Placement(3)
    placement.place_many(pipelines)
    assert placement.placed["s0-p000"] == 2
    before = dict(placement.placed)
    assert placement.place("s0-p000", Placeable("db0:3306", pin=0)) == 0
    assert {n: s for n, s in placement.placed.items() if n != "s0-p000"} == {
        n: s for n, s in before.items() if n != "s0-p000"}
    assert placement.place("s0-p000", Placeable("db0:3306")) == 0  # unpinned: stays


def test_pin_to_a_missing_slot_falls_back_to_normal_placement(
        caplog: pytest.LogCaptureFixture) -> None:
    placement = Placement(2)
    with caplog.at_level(logging.ERROR):
        slot = placement.place("p", Placeable("db0:3306", pin=5))
    assert slot in (0, 1)
    assert "pin=5 workers=2" in caplog.text


def test_pin_annotation_parsing(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_pin("p", {PIN_ANNOTATION: "3"}) == 3
    assert parse_pin("p", {PIN_ANNOTATION: "worker-1"}) == 1
    assert parse_pin("p", {"team": "x"}) is None
    with caplog.at_level(logging.ERROR):
        assert parse_pin("p", {PIN_ANNOTATION: "fast"}) is None
    assert "not a slot number" in caplog.text


def test_a_supervisor_restart_reproduces_the_placement() -> None:
    """Placement built by churn at run time; after a restart every pipeline reports the slot
    it last ran on (StatusRecord.worker), and the restored placement is the same."""
    rng = random.Random(11)
    live = Placement(4)
    inputs: dict[str, Placeable] = {}
    for _ in range(200):
        name = f"p{rng.randrange(120)}"
        if name in inputs and rng.random() < 0.3:
            live.remove(name)
            del inputs[name]
        elif name not in inputs:
            inputs[name] = Placeable(f"db{rng.randrange(3)}:3306")
            live.place(name, inputs[name])
    reported = {n: Placeable(p.server, last_slot=live.placed[n]) for n, p in inputs.items()}
    assert boot_placement(4, reported).placed == live.placed


def test_a_restart_with_more_workers_places_afresh_and_deterministically() -> None:
    old = placed(3, 50, 2)
    reported = {n: Placeable(p.server, last_slot=old.placed[n])
                for n, p in fleet(3, 50).items()}
    grown = boot_placement(4, reported)
    assert grown.balanced() and min(grown.loads) > 0
    shuffled = dict(sorted(reported.items(), key=lambda _: random.random()))
    assert boot_placement(4, shuffled).placed == grown.placed
    fewer = boot_placement(1, reported)
    assert set(fewer.placed.values()) == {0}


def test_a_moved_pipeline_starts_on_its_new_slot_once_the_old_worker_let_go() -> None:
    placement, moves = Placement(3), Moves()
    placement.place_many({"a": Placeable("db:1", pin=0), "b": Placeable("db:1")})
    b_slot = placement.placed["b"]
    old: Desired = {"a": (1, "running"), "b": (1, "running")}
    new: Desired = {"a": (2, "running"), "c": (1, "paused")}
    pids = [10, 11, 12]
    routed = routed_changes(old, new, placement, {"a": Placeable("db:1", pin=1),
                                                  "c": Placeable("db:2")}, moves, pids)
    assert routed == [(0, ("unassign", "a", "stopped")),
                      (b_slot, ("unassign", "b", "deleted")),
                      (placement.placed["c"], ("unassign", "c", "paused"))]
    assert "b" not in placement.placed and "a" in moves
    assert moves.released(pids, placement) == []  # worker-0 is still draining it
    moves.unassigned("b")  # another pipeline's report changes nothing
    assert moves.released(pids, placement) == []
    moves.unassigned("a")
    assert moves.released(pids, placement) == [(1, ("assign", "a", 2))]
    assert "a" not in moves


def test_a_move_ends_when_the_old_worker_is_down_or_the_pipeline_changes_again() -> None:
    placement, moves = Placement(3), Moves()
    placement.place("a", Placeable("db:1", pin=0))
    running: Desired = {"a": (1, "running")}
    pids = [10, 11, 12]
    routed_changes(running, {"a": (2, "running")}, placement, {"a": Placeable("db:1", pin=1)},
                   moves, pids)
    # moved again before it started: nothing to unassign on slot 1, still held for slot 0
    routed = routed_changes({"a": (2, "running")}, {"a": (3, "running")}, placement,
                            {"a": Placeable("db:1", pin=2)}, moves, pids)
    assert routed == [] and "a" in moves
    assert moves.released([20, 11, 12], placement) == [  # worker-0 was replaced
        (2, ("assign", "a", 3))]
    routed_changes({"a": (3, "running")}, {"a": (4, "running")}, placement,
                   {"a": Placeable("db:1", pin=0)}, moves, pids)
    assert moves.released([10, 11, None], placement) == [(0, ("assign", "a", 4))]  # down
    routed_changes({"a": (4, "running")}, {"a": (5, "running")}, placement,
                   {"a": Placeable("db:1", pin=1)}, moves, pids)
    deleted = routed_changes({"a": (5, "running")}, {}, placement, {}, moves, pids)
    assert deleted == [(0, ("unassign", "a", "deleted"))] and "a" not in moves  # after drain


def test_measured_rate_and_server_key() -> None:
    assert events_per_s(None) is None
    ran = StatusRecord("p", started_at=100.0, updated_at=200.0, events_total=5000)
    assert events_per_s(ran) == 50.0
    assert load_weight(events_per_s(ran)) == 2.0
    assert events_per_s(StatusRecord("p", started_at=100.0, updated_at=101.0)) is None
    assert server_address("mysql://cdc:secret@DB1.example:3307/shop") == "db1.example:3307"
    assert server_address("mysql://cdc@db1.example/shop") == "db1.example:3306"


@pytest.mark.services
def test_pins_hold_through_patch_worker_kill_and_restart(
        mariadb: Any, kafka: Any, tmp_path: Path) -> None:
    """The real service with 3 workers: pinned pipelines run on their slots, a PATCH of the
    pin moves only that pipeline, a killed worker gets its pipelines back, a restart of the
    whole service reproduces the placement (it is still balanced, so it is restored)."""
    db = unique("place")
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    docs = [pipeline_yaml(name, mariadb.cdc_dsn(), kafka.bootstrap, [f"{db}.t"], f"{db}.t")
            for name in "abcdef"]
    docs[0]["metadata"]["annotations"] = {PIN_ANNOTATION: "2"}
    docs[1]["metadata"]["annotations"] = {PIN_ANNOTATION: "worker-0"}
    docs[2]["metadata"]["annotations"] = {PIN_ANNOTATION: "9"}  # no such slot: placed normally
    service = Service(write_config(tmp_path / "config", *docs), tmp_path / "data", workers=3)
    try:
        service.start()
        slots = {name: service.wait_running(name)["ops"]["worker"] for name in "abcdef"}
        assert (slots["a"], slots["b"]) == (2, 0) and slots["c"] in (0, 1, 2)
        assert "pin=9 workers=3" in service.log(None)

        patch = {"metadata": {"annotations": {PIN_ANNOTATION: "1"}}}
        assert service.api.patch("/pipelines/a", json=patch).status_code == 200
        service.wait_until(lambda: running_on(service, "a") == 1, 60, "a running on worker 1")
        slots["a"] = 1
        assert {name: running_on(service, name) for name in "abcdef"} == slots

        victim = service.pipeline("a")["ops"]["worker_pid"]
        os.kill(victim, signal.SIGKILL)
        service.wait_until(lambda: service.pipeline("a")["ops"]["worker_pid"] != victim
                           and running_on(service, "a") == 1, 60, "a back on worker 1")

        assert service.stop() == 0
        service.start()
        for name in "abcdef":
            service.wait_running(name)
        assert {name: running_on(service, name) for name in "abcdef"} == slots  # still balanced
    finally:
        service.close()


def running_on(service: Service, name: str) -> int | None:
    """The slot running ``name`` now (None unless running)."""
    info = service.pipeline(name)
    return info["ops"]["worker"] if info["status"] == "running" else None
