"""An operator's answers to what the protocol cannot settle: abandoning phase 2 to a
participant gone for good, and heuristic damage a forced participant reports."""

from __future__ import annotations

from typing import Any

from tests.coordinator.conftest import Harness, bearer
from twopc_core.metrics import totals
from twopc_core.testing import wait_until

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]


def _abandon(participant: str = "p2", reason: str = "p2's disk is gone") -> dict[str, Any]:
    return {"action": "abandon", "participant": participant, "reason": reason}


async def _committed_with_p2_silent(harness: Harness) -> str:
    """A transaction decided commit whose p2 never acknowledges phase 2."""
    harness.participants["p2"].mode = "hang_commit"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200 and body["outcome"] == "committed"
    assert [(b["name"], b["pending"]) for b in body["branches"]] == [("p1", False), ("p2", True)]
    return str(body["gtid"])


async def test_an_operator_abandons_a_silent_branch_and_the_decision_stands(harness: Harness) -> None:
    gtid = await _committed_with_p2_silent(harness)

    status, body = await harness.call(
        "POST", f"/v1/transactions/{gtid}/resolve", json=_abandon(), headers=bearer("operator")
    )

    assert status == 200, body
    assert (body["state"], body["outcome"]) == ("committed", "committed")
    p1, p2 = body["branches"]
    assert (p1["state"], p2["state"], p2["pending"]) == ("committed", "abandoned", False)
    assert p2["resolved_by"] == "operator" and p2["resolved_at"] is not None
    assert "p2's disk is gone" in p2["reason"]
    status, shown = await harness.call("GET", f"/v1/transactions/{gtid}")
    assert shown["state"] == "committed" and shown["branches"][1]["state"] == "abandoned"


async def test_an_abandoned_branch_hears_no_more_phase_2(harness: Harness) -> None:
    gtid = await _committed_with_p2_silent(harness)
    await harness.call("POST", f"/v1/transactions/{gtid}/resolve", json=_abandon(), headers=bearer("operator"))
    sent = len(harness.participants["p2"].ops("commit"))
    harness.participants["p2"].mode = "json"  # were it retried now, it would be answered
    status, _ = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200  # another transaction's rounds went by meanwhile
    assert [c["gtid"] for c in harness.participants["p2"].ops("commit")][sent:].count(gtid) == 0


async def test_every_operator_act_is_in_the_audit_newest_first(harness: Harness) -> None:
    first = await _committed_with_p2_silent(harness)
    second = await _committed_with_p2_silent(harness)
    for gtid in (first, second):
        await harness.call(
            "POST", f"/v1/transactions/{gtid}/resolve", json=_abandon(reason=f"gone {gtid}"), headers=bearer("operator")
        )

    status, page = await harness.call("GET", "/v1/audit?limit=1", headers=bearer("reader"))
    assert status == 200
    (act,) = page["acts"]
    assert (act["action"], act["actor"], act["gtid"], act["participant"]) == ("abandon", "operator", second, "p2")
    assert act["reason"] == f"gone {second}"
    cursor = page["next_cursor"]
    status, rest = await harness.call("GET", f"/v1/audit?limit=5&cursor={cursor}", headers=bearer("reader"))
    assert [a["gtid"] for a in rest["acts"]] == [first]


async def test_abandoning_an_undecided_transaction_is_refused(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p2"}]})
    gtid = body["gtid"]

    status, body = await harness.call(
        "POST", f"/v1/transactions/{gtid}/resolve", json=_abandon(), headers=bearer("operator")
    )

    assert (status, body["error"]["code"]) == (409, "wrong_state")
    assert "undecided" in body["error"]["message"]
    status, audit = await harness.call("GET", "/v1/audit", headers=bearer("operator"))
    assert audit["acts"] == []


async def test_abandoning_a_branch_that_acknowledged_is_refused(harness: Harness) -> None:
    gtid = await _committed_with_p2_silent(harness)

    status, body = await harness.call(
        "POST", f"/v1/transactions/{gtid}/resolve", json=_abandon("p1"), headers=bearer("operator")
    )

    assert (status, body["error"]["code"]) == (409, "wrong_state")


async def test_a_resolve_without_a_reason_or_with_another_action_is_422(harness: Harness) -> None:
    gtid = await _committed_with_p2_silent(harness)
    for bad in ({"action": "abandon", "participant": "p2"}, {**_abandon(), "action": "commit"}):
        status, body = await harness.call(
            "POST", f"/v1/transactions/{gtid}/resolve", json=bad, headers=bearer("operator")
        )
        assert (status, body["error"]["code"]) == (422, "invalid_request"), bad


async def test_only_an_operator_may_resolve(harness: Harness) -> None:
    gtid = await _committed_with_p2_silent(harness)
    for token in ("client-a", "reader"):
        status, body = await harness.call(
            "POST", f"/v1/transactions/{gtid}/resolve", json=_abandon(), headers=bearer(token)
        )
        assert (status, body["error"]["code"]) == (403, "forbidden"), token


async def test_a_branch_forced_against_the_decision_is_recorded_as_heuristic_damage(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": TWO})
    gtid = body["gtid"]
    harness.participants["p2"].forced[gtid] = "aborted"  # forced while it was in doubt

    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/commit")

    assert (status, body["outcome"], body["heuristic"]) == (200, "committed", "mixed")
    p1, p2 = body["branches"]
    assert (p1["heuristic"], p2["heuristic"], p2["pending"]) == (None, "aborted", False)
    status, listed = await harness.call("GET", "/v1/transactions?heuristic=true")
    assert [t["gtid"] for t in listed["transactions"]] == [gtid]
    status, clean = await harness.call("GET", "/v1/transactions?heuristic=false")
    assert gtid not in [t["gtid"] for t in clean["transactions"]]
    metrics = totals(await (await harness.client.get("/metrics")).text())
    assert metrics["twopc_heuristics_found"] == 1

    async def audited() -> list[Any]:
        _, page = await harness.call("GET", "/v1/audit")
        return [(a["action"], a["actor"], a["gtid"], a["details"]) for a in page["acts"]]

    await wait_until(audited, timeout=5, message="the damage in the audit")
    assert await audited() == [("heuristic", "participant:p2", gtid, {"forced": "aborted", "decision": "committed"})]


async def test_a_branch_forced_the_way_of_the_decision_is_no_damage(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": TWO})
    gtid = body["gtid"]
    harness.participants["p2"].forced[gtid] = "committed"

    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/commit")

    assert (body["outcome"], body["heuristic"]) == ("committed", None)
    status, listed = await harness.call("GET", "/v1/transactions?heuristic=true")
    assert (status, listed["transactions"]) == (200, [])


async def test_a_heuristic_filter_that_is_not_a_boolean_is_400(harness: Harness) -> None:
    status, body = await harness.call("GET", "/v1/transactions?heuristic=yes")
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")
