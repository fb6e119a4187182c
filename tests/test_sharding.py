"""Placement is balanced and stable: adding one pipeline moves no other."""

from collections import Counter

from supervisor.sharding import assign_slots


def test_placement_is_balanced_over_slots() -> None:
    placement = assign_slots([f"p{i}" for i in range(300)], 4)
    per_slot = Counter(placement.values())
    assert set(per_slot) == {0, 1, 2, 3}
    assert max(per_slot.values()) - min(per_slot.values()) < 40


def test_adding_a_pipeline_moves_no_other() -> None:
    names = [f"p{i}" for i in range(100)]
    before = assign_slots(names, 3)
    after = assign_slots(names + ["new"], 3)
    assert {n: after[n] for n in names} == before


def test_removing_a_slot_moves_only_its_pipelines() -> None:
    names = [f"p{i}" for i in range(100)]
    before, after = assign_slots(names, 4), assign_slots(names, 3)
    assert all(after[n] == before[n] for n in names if before[n] != 3)
