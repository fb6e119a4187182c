"""What a worker must be told when a pipeline's desired state changes."""

from __future__ import annotations

from typing import Any

from supervisor.boot import Desired


def worker_message(name: str, generation: int, desired: str) -> tuple[Any, ...]:
    """``assign`` for a running pipeline, otherwise ``unassign`` to its final status."""
    if desired == "running":
        return ("assign", name, generation)
    return ("unassign", name, desired)


def desired_changes(old: Desired, new: Desired) -> list[tuple[str, tuple[Any, ...]]]:
    """(pipeline, message) for every pipeline added, changed or removed; unchanged ones none."""
    changes = [(name, ("unassign", name, "deleted")) for name in sorted(old.keys() - new.keys())]
    for name, (generation, desired) in sorted(new.items()):
        if old.get(name) != (generation, desired):
            changes.append((name, worker_message(name, generation, desired)))
    return changes
