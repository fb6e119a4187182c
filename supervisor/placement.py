"""Placement of pipelines on worker slots: sticky, server-aware, balanced by load.

- Sticky: a placed pipeline keeps its slot while it exists; adding or removing a pipeline
  moves no other, a worker restart changes nothing. Only a changed pin moves a pipeline.
- Pinned: the annotation ``deltaforge.io/worker: "<slot>"`` places a pipeline on that slot.
- Server-aware: a worker opens one binlog stream per server it has pipelines of, so a slot
  that already reads the pipeline's server is preferred while its load stays within the
  tolerance of the average; otherwise the least loaded slot wins. Ties go to the rendezvous
  hash, so the result never depends on input order.
- Packed: pipelines placed together (at start, or new files on reload) are packed largest
  server first, each slot filled up to the average, so a server is split over as few slots
  as balance allows.

Pure logic; ``supervisor/boot.py`` reads the inputs from state.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from supervisor.sharding import rendezvous_weight

log = logging.getLogger(__name__)
PIN_ANNOTATION = "deltaforge.io/worker"
TOLERANCE = 0.25  # a slot may exceed the average load by this fraction (plus one pipeline)
EVENTS_PER_S_PER_UNIT = 50.0  # measured events/s that weigh as much as one idle pipeline


@dataclass(frozen=True)
class Placeable:
    """What placement knows of one pipeline."""

    server: str  # host:port of its source, the key of the binlog stream it shares
    weight: float = 1.0  # its load, see ``load_weight``
    pin: int | None = None  # slot named by the pin annotation
    last_slot: int | None = None  # slot it last ran on, before this supervisor started


def load_weight(events_per_s: float | None) -> float:
    """One unit per pipeline (its fixed cost) plus its measured rate; 1 when unmeasured."""
    return 1.0 + max(0.0, events_per_s or 0.0) / EVENTS_PER_S_PER_UNIT


def parse_pin(name: str, annotations: Mapping[str, str]) -> int | None:
    """The slot of the pin annotation (``"2"`` or ``"worker-2"``); None when absent or bad."""
    text = annotations.get(PIN_ANNOTATION)
    if text is None:
        return None
    digits = text.strip().removeprefix("worker-")
    if digits.isdigit():
        return int(digits)
    log.error("pin annotation is not a slot number; placing normally pipeline=%s %s=%r",
              name, PIN_ANNOTATION, text)
    return None


class Placement:
    """Which worker slot runs each pipeline."""

    def __init__(self, slots: int, tolerance: float = TOLERANCE) -> None:
        self.slots = slots
        self.tolerance = tolerance
        self.pipelines: dict[str, Placeable] = {}
        self.placed: dict[str, int] = {}
        self.members: list[set[str]] = [set() for _ in range(slots)]
        self.loads = [0.0] * slots
        self.servers: list[Counter[str]] = [Counter() for _ in range(slots)]

    def slot_of(self, name: str) -> int | None:
        return self.placed.get(name)

    def place(self, name: str, pipeline: Placeable) -> int:
        """Place one pipeline (new or changed) and return its slot."""
        self.place_many({name: pipeline})
        return self.placed[name]

    def place_many(self, pipelines: Mapping[str, Placeable]) -> None:
        """Place these pipelines: known ones stay unless their pin names another slot, new
        ones are restored to their last slot or packed together."""
        fresh: dict[str, Placeable] = {}
        for name in sorted(pipelines):
            pipeline = pipelines[name]
            current = self.placed.get(name)
            self.remove(name)
            slot = self.valid_pin(name, pipeline)
            if slot is None:
                slot = current if current is not None else self.valid_slot(pipeline.last_slot)
            if slot is None:
                fresh[name] = pipeline
            else:
                self.put(name, pipeline, slot)
        self.pack(fresh)

    def remove(self, name: str) -> int | None:
        """Forget a pipeline and free its load; returns the slot it had."""
        slot = self.placed.pop(name, None)
        if slot is not None:
            pipeline = self.pipelines.pop(name)
            self.members[slot].discard(name)
            self.servers[slot][pipeline.server] -= 1
            if not self.servers[slot][pipeline.server]:
                del self.servers[slot][pipeline.server]
            self.recount(slot)
        return slot

    def balanced(self) -> bool:
        """Every slot's load is within the tolerance (plus the heaviest pipeline) of the
        average; a placement restored after a restart is kept only if this holds."""
        if not self.pipelines:
            return True
        average = math.fsum(self.loads) / self.slots
        slack = self.tolerance * average + max(p.weight for p in self.pipelines.values())
        return max(self.loads) <= average + slack and min(self.loads) >= average - slack

    # ---- steps ---------------------------------------------------------------------------

    def valid_pin(self, name: str, pipeline: Placeable) -> int | None:
        if pipeline.pin is None or pipeline.pin < self.slots:
            return pipeline.pin
        log.error("pipeline pinned to a worker slot that does not exist; placing normally "
                  "pipeline=%s pin=%d workers=%d", name, pipeline.pin, self.slots)
        return None

    def valid_slot(self, slot: int | None) -> int | None:
        return slot if slot is not None and 0 <= slot < self.slots else None

    def pack(self, pipelines: Mapping[str, Placeable]) -> None:
        """Largest server group first, heaviest pipeline first, each to ``choose``."""
        total = math.fsum(self.loads) + math.fsum(p.weight for p in pipelines.values())
        target = total / self.slots
        for group in server_groups(pipelines):
            remaining = math.fsum(pipelines[name].weight for name in group)
            for name in group:
                pipeline = pipelines[name]
                self.put(name, pipeline, self.choose(name, pipeline, target, remaining))
                remaining -= pipeline.weight

    def choose(self, name: str, pipeline: Placeable, target: float, remaining: float) -> int:
        """The least loaded slot that reads the pipeline's server and has room for it, else the
        least loaded slot; ties by rendezvous hash. ``target`` is the average load once the
        batch is placed, ``remaining`` the weight of its server's pipelines still to place."""
        sharing = [slot for slot in range(self.slots) if self.servers[slot][pipeline.server]
                   and self.has_room(slot, pipeline.weight, target, remaining)]
        candidates = sharing or range(self.slots)
        return min(candidates, key=lambda slot: (self.loads[slot],
                                                 -rendezvous_weight(name, slot)))

    def has_room(self, slot: int, weight: float, target: float, remaining: float) -> bool:
        """Room up to the average; beyond it only if the rest of the server's pipelines fit
        there within the tolerance and the load above average over all slots stays within
        the tolerance too (so that no slot is left far below average)."""
        load = self.loads[slot]
        if load + weight <= target + weight / 2:
            return True
        final = load + remaining
        if final > target * (1.0 + self.tolerance) + weight:
            return False
        above = math.fsum(max(0.0, other - target) for other in self.loads)
        extra = max(0.0, final - target) - max(0.0, load - target)
        return above + extra <= self.tolerance * target + weight

    def put(self, name: str, pipeline: Placeable, slot: int) -> None:
        self.pipelines[name] = pipeline
        self.placed[name] = slot
        self.members[slot].add(name)
        self.servers[slot][pipeline.server] += 1
        self.recount(slot)

    def recount(self, slot: int) -> None:
        """Sum afresh (exactly rounded), so loads never drift with adds and removes."""
        self.loads[slot] = math.fsum(self.pipelines[name].weight for name in self.members[slot])


def server_groups(pipelines: Mapping[str, Placeable]) -> list[list[str]]:
    """Names grouped by server: heaviest group first, heaviest pipeline first, then by name."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, pipeline in pipelines.items():
        groups[pipeline.server].append(name)
    for names in groups.values():
        names.sort(key=lambda name: (-pipelines[name].weight, name))
    weights = {server: math.fsum(pipelines[n].weight for n in names)
               for server, names in groups.items()}
    return [groups[server] for server in sorted(groups, key=lambda s: (-weights[s], s))]


def boot_placement(slots: int, pipelines: Mapping[str, Placeable]) -> Placement:
    """At start: every pipeline back on the slot it last ran on, unless that is out of balance
    (``--workers`` changed, the load shifted); then all are placed afresh, which costs nothing
    at start since every pipeline starts anyway. Both outcomes follow from the inputs alone."""
    restored = Placement(slots)
    restored.place_many(pipelines)
    if restored.balanced():
        return restored
    log.info("placement of the last run is out of balance; placing afresh workers=%d", slots)
    fresh = Placement(slots)
    fresh.place_many({name: replace(p, last_slot=None) for name, p in pipelines.items()})
    return fresh
