"""Global transaction ids: URL-safe, bounded, unique, ordered."""

from __future__ import annotations

import re

from coordinator.engine._ids import new_gtid
from twopc_core.protocol import GTID_PATTERN


def test_gtids_are_url_safe_and_at_most_64_characters() -> None:
    gtid = new_gtid("node1")
    assert re.match(GTID_PATTERN, gtid)
    assert gtid.startswith("node1-")


def test_gtids_made_in_the_same_millisecond_are_ordered_and_unique() -> None:
    gtids = [new_gtid("c1", now=1_000.0) for _ in range(1000)]
    assert gtids == sorted(gtids)
    assert len(set(gtids)) == len(gtids)


def test_a_clock_stepping_back_does_not_reorder_gtids() -> None:
    later = new_gtid("c1", now=2_000_000.0)
    earlier_clock = new_gtid("c1", now=1_000_000.0)
    assert earlier_clock > later
