"""The work still in memory, oldest first: what the admin page's unfinished list shows."""

from __future__ import annotations

from coordinator.api._routes import STATE
from coordinator.engine import Coordinator
from tests.coordinator.conftest import Harness
from twopc_core.testing import wait_until


def _coordinator(harness: Harness) -> Coordinator:
    coordinator = harness.client.server.app[STATE].coordinator
    assert coordinator is not None
    return coordinator


async def test_unfinished_lists_active_and_in_doubt_work_oldest_first_and_bounded(harness: Harness) -> None:
    _, first = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    harness.participants["p2"].mode = "hang_commit"
    _, stuck = await harness.call(
        "POST", "/v1/transactions:execute", json={"participants": [{"name": "p1"}, {"name": "p2"}]}
    )
    harness.participants["p2"].mode = "json"
    _, done = await harness.call("POST", "/v1/transactions:execute", json={"participants": [{"name": "p1"}]})
    await wait_until(lambda: _coordinator(harness).active_count == 2, timeout=5, message="the END of the finished one")
    _, last = await harness.call("POST", "/v1/transactions", json={})

    listed = _coordinator(harness).unfinished(10)

    assert [v.record.gtid for v in listed] == [first["gtid"], stuck["gtid"], last["gtid"]]
    assert done["gtid"] not in [v.record.gtid for v in listed]  # finished, END durable: not unfinished
    active, in_doubt, _ = listed
    assert (active.pending, active.in_doubt) == (frozenset(), frozenset())
    assert (in_doubt.record.decision, in_doubt.pending, in_doubt.in_doubt) == (
        "committed",
        frozenset({"p2"}),
        frozenset({"p2"}),
    )
    assert active.age >= in_doubt.age >= listed[2].age >= 0
    assert [v.record.gtid for v in _coordinator(harness).unfinished(2)] == [first["gtid"], stuck["gtid"]]


async def test_payloads_are_shown_while_in_memory_and_none_once_finished(harness: Harness) -> None:
    harness.participants["p2"].mode = "hang_commit"
    _, stuck = await harness.call(
        "POST", "/v1/transactions:execute", json={"participants": [{"name": "p1", "payload": {"n": 1}}, {"name": "p2"}]}
    )
    harness.participants["p2"].mode = "json"
    _, done = await harness.call("POST", "/v1/transactions:execute", json={"participants": [{"name": "p1"}]})

    assert _coordinator(harness).payloads(stuck["gtid"]) == {"p1": {"n": 1}, "p2": None}
    # Finished: out of memory once its END record is durable (written after the answer).
    await wait_until(lambda: _coordinator(harness).payloads(done["gtid"]) == {}, timeout=5, message="END durable")
