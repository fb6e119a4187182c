"""What workers must be told when pipelines' desired state or placement changes."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supervisor.boot import Desired
from supervisor.placement import Placeable, Placement

log = logging.getLogger(__name__)
Message = tuple[Any, ...]
Routed = list[tuple[int, Message]]  # (worker slot, message), in sending order


def worker_message(name: str, generation: int, desired: str) -> Message:
    """``assign`` for a running pipeline, otherwise ``unassign`` to its final status."""
    if desired == "running":
        return ("assign", name, generation)
    return ("unassign", name, desired)


def desired_changes(old: Desired, new: Desired) -> list[tuple[str, Message]]:
    """(pipeline, message) for every pipeline added, changed or removed; unchanged ones none."""
    changes = [(name, ("unassign", name, "deleted")) for name in sorted(old.keys() - new.keys())]
    for name, (generation, desired) in sorted(new.items()):
        if old.get(name) != (generation, desired):
            changes.append((name, worker_message(name, generation, desired)))
    return changes


@dataclass
class HeldAssign:
    """The assign of a moved pipeline, waiting for its old worker to let the pipeline go."""

    from_slot: int
    from_pid: int | None  # the old worker's process when the unassign was sent
    message: Message | None = None
    reported: bool = False  # the old worker said it drained the pipeline

    def let_go(self, worker_pid: int | None) -> bool:
        """True once the old worker reported the pipeline drained, or that process is gone."""
        return self.reported or worker_pid is None or worker_pid != self.from_pid


class Moves:
    """Assigns of moved pipelines, held until the worker that ran them has drained them, so
    its last checkpoint and status are written before the new worker starts the pipeline."""

    def __init__(self) -> None:
        self.held: dict[str, HeldAssign] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.held

    def start(self, name: str, from_slot: int, from_pid: int | None) -> None:
        log.info("pipeline moves to another worker pipeline=%s from=worker-%d", name, from_slot)
        self.held[name] = HeldAssign(from_slot, from_pid)

    def unassigned(self, name: str) -> None:
        """A worker reported that it drained ``name`` (its last records are written)."""
        held = self.held.get(name)
        if held is not None:
            held.reported = True

    def route(self, name: str, slot: int, message: Message) -> tuple[int, Message] | None:
        """Where a message goes now: a moving pipeline's assign is held (None); its other
        messages end the move and go to the old worker, after the unassign it already has."""
        held = self.held.get(name)
        if held is None:
            return slot, message
        if message[0] == "assign":
            held.message = message
            return None
        del self.held[name]
        return held.from_slot, message

    def released(self, worker_pids: Sequence[int | None], placement: Placement) -> Routed:
        """The held assigns whose old worker has let go, each to the pipeline's slot now."""
        routed: Routed = []
        for name, held in list(self.held.items()):
            if held.let_go(worker_pids[held.from_slot]):
                del self.held[name]
                slot = placement.slot_of(name)
                if held.message is not None and slot is not None:
                    log.info("moved pipeline let go by its old worker pipeline=%s "
                             "from=worker-%d to=worker-%d", name, held.from_slot, slot)
                    routed.append((slot, held.message))
        return routed


def routed_changes(old: Desired, new: Desired, placement: Placement,
                   inputs: Mapping[str, Placeable], moves: Moves,
                   worker_pids: Sequence[int | None]) -> Routed:
    """Place ``new`` (removed pipelines freed, ``inputs`` placed) and route each change to its
    slot. A pipeline that moved (its pin changed) is unassigned from its old slot; its assign
    is held in ``moves`` until the old worker has let it go."""
    before = dict(placement.placed)
    for name in old.keys() - new.keys():
        placement.remove(name)
    unplaced = {name: Placeable(server="") for name in new if name not in placement.placed}
    placement.place_many({**unplaced, **{n: p for n, p in inputs.items() if n in new}})
    messages = dict(desired_changes(old, new))
    routed: Routed = []
    for name, slot in sorted(before.items()):
        if placement.slot_of(name) not in (None, slot):
            if name not in moves:  # else it never reached ``slot``: the old worker still drains
                routed.append((slot, ("unassign", name, "stopped")))
                moves.start(name, slot, worker_pids[slot])
            messages.setdefault(name, worker_message(name, *new[name]))
    for name, message in messages.items():
        owner = placement.slot_of(name)
        owner = before.get(name) if owner is None else owner
        if owner is not None and (sent := moves.route(name, owner, message)) is not None:
            routed.append(sent)
    return routed
