"""Global transaction ids: the node's id, then time, a counter and randomness.

``{node}-{12 hex: milliseconds}{6 hex: counter}{10 hex: random}``: URL-safe, at most 64
characters, unique across replicas (node ids differ) and restarts (time and random
bits), and ordered by start within a process — paging relies on that — even for ids
made in the same millisecond or across a step back of the wall clock.
"""

from __future__ import annotations

import itertools
import random
import time

__all__ = ["new_gtid", "node_of"]

_counter = itertools.count()
_last_millis = 0
#: Seeded by the OS at start. The ids need unique bits, not secret ones, and asking the
#: OS for each id (as ``secrets`` does) costs a system call per transaction.
_random = random.Random()


def new_gtid(node_id: str, now: float | None = None) -> str:
    global _last_millis
    _last_millis = max(_last_millis, int((time.time() if now is None else now) * 1000))
    return f"{node_id}-{_last_millis:012x}{next(_counter) % (1 << 24):06x}{_random.getrandbits(40):010x}"


def node_of(gtid: str) -> str | None:
    """The id of the replica that began ``gtid`` (None for one this module did not make)."""
    node, dash, _ = gtid.partition("-")
    return node if dash and node else None
