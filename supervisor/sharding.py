"""Placement of pipelines on worker slots by rendezvous hashing.

Each pipeline goes to the slot with the highest hash of (pipeline, slot): balanced on average,
and adding or removing one pipeline moves no other.
"""

from __future__ import annotations

import hashlib


def slot_for(pipeline: str, slots: int) -> int:
    return max(range(slots), key=lambda slot: _weight(pipeline, slot))


def assign_slots(pipelines: list[str], slots: int) -> dict[str, int]:
    return {name: slot_for(name, slots) for name in pipelines}


def _weight(pipeline: str, slot: int) -> int:
    digest = hashlib.blake2b(f"{pipeline}\0{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
