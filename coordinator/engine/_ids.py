"""Global transaction ids: the node's id, then time-ordered randomness.

``{node}-{12 hex digits of milliseconds}{16 random hex digits}``: URL-safe, at most 64
characters, unique across replicas (node ids differ) and restarts (time and 64 random
bits), and sortable by start time within a node, which is what paging relies on.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["new_gtid"]


def new_gtid(node_id: str, now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    return f"{node_id}-{millis:012x}{secrets.randbits(64):016x}"
