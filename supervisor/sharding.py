"""Rendezvous hashing: the tie-breaker of placement (``supervisor/placement.py``).

Each (pipeline, slot) pair gets a stable pseudo-random weight; among equally good slots the
one with the highest weight wins, so ties spread evenly and never depend on input order.
"""

from __future__ import annotations

import hashlib


def rendezvous_weight(pipeline: str, slot: int) -> int:
    digest = hashlib.blake2b(f"{pipeline}\0{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
