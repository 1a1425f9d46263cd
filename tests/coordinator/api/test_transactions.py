"""The REST API against stub participants: the protocol's rounds as a client sees them."""

from __future__ import annotations

import time

import pytest

from tests.coordinator.conftest import Harness

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]


async def test_execute_commits_across_two_participants(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200
    assert body["outcome"] == "committed"
    assert body["state"] == "committed"
    assert [b["state"] for b in body["branches"]] == ["committed", "committed"]
    for stub in harness.participants.values():
        assert [c["gtid"] for c in stub.ops("prepare")] == [body["gtid"]]
        assert body["gtid"] in stub.committed


async def test_each_branch_shows_its_vote_and_when_it_voted_and_acknowledged(harness: Harness) -> None:
    harness.participants["p2"].vote = "read_only"
    _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    p1, p2 = body["branches"]
    assert (p1["vote"], p2["vote"]) == ("yes", "read_only")
    assert body["created_at"] <= p1["voted_at"] <= p1["acknowledged_at"]
    assert p2["voted_at"] is not None and p2["acknowledged_at"] is None  # read only: no phase 2


async def test_a_no_vote_is_kept_on_its_branch(harness: Harness) -> None:
    harness.participants["p2"].vote = "no"
    _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert [b["vote"] for b in body["branches"]] == ["yes", "no"]
    assert body["branches"][0]["acknowledged_at"] is not None  # its abort was acknowledged


async def test_prepare_carries_the_payload_and_a_traceparent(harness: Harness) -> None:
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    stub = harness.participants["p1"]
    assert stub.ops("prepare")[0]["payload"] == {"n": 1}
    assert any("traceparent" in h for h in stub.headers)


async def test_each_transaction_without_a_client_trace_gets_a_trace_of_its_own(harness: Harness) -> None:
    for _ in range(2):
        await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    sent = [h["traceparent"] for h in harness.participants["p1"].headers if "traceparent" in h]
    trace_ids = {t.split("-")[1] for t in sent}
    assert len(sent) >= 2 and len(trace_ids) == 2
    assert all(int(trace_id, 16) != 0 for trace_id in trace_ids)


async def test_the_clients_trace_continues_to_the_participants(harness: Harness) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO}, headers=headers)
    sent = [h["traceparent"] for h in harness.participants["p1"].headers if "traceparent" in h]
    assert sent and all(t.split("-")[1] == trace_id for t in sent)


async def test_a_no_vote_aborts_and_tells_the_other_branch(harness: Harness) -> None:
    harness.participants["p2"].vote = "no"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200
    assert body["outcome"] == "aborted"
    assert "stub says no" in body["reason"]
    assert body["gtid"] in harness.participants["p1"].aborted
    assert not harness.participants["p1"].committed


async def test_single_branch_commits_in_one_phase(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO[:1]})
    assert status == 200 and body["outcome"] == "committed"
    stub = harness.participants["p1"]
    assert stub.ops("prepare") == []
    (commit,) = stub.ops("commit")
    assert commit["one_phase"] is True
    # The transaction's deadline goes along, as with a prepare, so the participant
    # can tell a new branch from a repeated one without reading its disk.
    assert commit["deadline"] == pytest.approx(time.time() + 30, abs=10)


async def test_all_read_only_votes_commit_without_phase_two(harness: Harness) -> None:
    for stub in harness.participants.values():
        stub.vote = "read_only"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200 and body["outcome"] == "committed"
    assert all(stub.ops("commit") == [] for stub in harness.participants.values())


async def test_garbage_from_a_participant_is_a_no_vote(harness: Harness) -> None:
    harness.participants["p2"].mode = "garbage"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200
    assert body["outcome"] == "aborted"
    assert "not the protocol" in body["reason"]


async def test_a_participant_that_hangs_is_a_no_vote_after_the_prepare_timeout(harness: Harness) -> None:
    harness.participants["p2"].mode = "hang"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200
    assert body["outcome"] == "aborted"
    assert "no answer" in body["reason"]


async def test_step_by_step_begin_enlist_commit(harness: Harness) -> None:
    status, begun = await harness.call("POST", "/v1/transactions", json={"timeout_ms": 5000, "metadata": {"who": "t"}})
    assert status == 201 and begun["state"] == "active"
    gtid = begun["gtid"]
    for p in TWO:
        status, _ = await harness.call("POST", f"/v1/transactions/{gtid}/participants", json=p)
        assert status == 201
    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/commit")
    assert status == 200 and body["outcome"] == "committed"
    status, shown = await harness.call("GET", f"/v1/transactions/{gtid}")
    assert status == 200 and shown["outcome"] == "committed" and shown["metadata"] == {"who": "t"}


async def test_repeated_commit_answers_the_same_outcome_without_a_second_round(harness: Harness) -> None:
    _, begun = await harness.call("POST", "/v1/transactions", json={"participants": TWO})
    gtid = begun["gtid"]
    _, first = await harness.call("POST", f"/v1/transactions/{gtid}/commit")
    _, second = await harness.call("POST", f"/v1/transactions/{gtid}/commit")
    assert first["outcome"] == second["outcome"] == "committed"
    assert len(harness.participants["p1"].ops("prepare")) == 1


async def test_execute_with_the_same_idempotency_key_is_one_transaction(harness: Harness) -> None:
    headers = {"Idempotency-Key": "order-42"}
    _, first = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO}, headers=headers)
    _, second = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO}, headers=headers)
    assert first["gtid"] == second["gtid"]
    assert len(harness.participants["p1"].ops("prepare")) == 1


async def test_begin_with_the_same_idempotency_key_replays_the_gtid(harness: Harness) -> None:
    headers = {"Idempotency-Key": "begin-7"}
    s1, first = await harness.call("POST", "/v1/transactions", json={}, headers=headers)
    s2, second = await harness.call("POST", "/v1/transactions", json={}, headers=headers)
    assert (s1, s2) == (201, 200)
    assert first["gtid"] == second["gtid"]


async def test_abort_then_the_transaction_is_aborted_and_early_branches_hear_it(harness: Harness) -> None:
    _, begun = await harness.call(
        "POST", "/v1/transactions", json={"participants": [{"name": "p1", "prepared": True}, TWO[1]]}
    )
    gtid = begun["gtid"]
    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/abort")
    assert status == 200 and body["outcome"] == "aborted"
    assert gtid in harness.participants["p1"].aborted  # it held prepared work
    assert harness.participants["p2"].calls == []  # it never heard of the transaction


async def test_early_prepared_branches_are_not_sent_prepare(harness: Harness) -> None:
    _, begun = await harness.call(
        "POST", "/v1/transactions", json={"participants": [{"name": "p1", "prepared": True}, TWO[1]]}
    )
    _, body = await harness.call("POST", f"/v1/transactions/{begun['gtid']}/commit")
    assert body["outcome"] == "committed"
    assert harness.participants["p1"].ops("prepare") == []
    assert begun["gtid"] in harness.participants["p1"].committed


async def test_a_transaction_past_its_deadline_is_aborted_by_the_reaper(harness: Harness) -> None:
    from twopc_core.testing import wait_until

    _, begun = await harness.call("POST", "/v1/transactions", json={"timeout_ms": 50, "participants": TWO})
    gtid = begun["gtid"]

    async def aborted() -> bool:
        _, body = await harness.call("GET", f"/v1/transactions/{gtid}")
        return body["outcome"] == "aborted"

    await wait_until(aborted, timeout=5, message="the reaper to abort the expired transaction")
    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/commit")
    assert status == 409 and body["error"]["code"] == "wrong_state"


async def test_list_pages_through_transactions_by_state(harness: Harness) -> None:
    gtids = []
    for _ in range(3):
        _, begun = await harness.call("POST", "/v1/transactions", json={})
        gtids.append(begun["gtid"])
    await harness.call("POST", f"/v1/transactions/{gtids[0]}/abort")
    status, page = await harness.call("GET", "/v1/transactions?state=active&limit=1")
    assert status == 200
    assert [t["gtid"] for t in page["transactions"]] == [gtids[1]]
    _, rest = await harness.call("GET", f"/v1/transactions?state=active&cursor={page['next_cursor']}")
    assert [t["gtid"] for t in rest["transactions"]] == [gtids[2]]


async def test_participants_are_listed_by_name(harness: Harness) -> None:
    status, body = await harness.call("GET", "/v1/participants")
    assert status == 200
    assert [p["name"] for p in body["participants"]] == ["p1", "p2"]
    assert {p["health"]["status"] for p in body["participants"]} == {"unknown"}


async def test_participant_health_follows_the_last_exchange(harness: Harness) -> None:
    harness.participants["p2"].mode = "garbage"
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    _, body = await harness.call("GET", "/v1/participants")
    health = {p["name"]: p["health"] for p in body["participants"]}
    assert health["p1"]["status"] == "ok" and health["p1"]["error"] is None
    assert health["p2"]["status"] == "unreachable" and "not the protocol" in health["p2"]["error"]


async def test_commit_answers_after_the_bounded_wait_with_the_slow_branch_pending(harness: Harness) -> None:
    harness.participants["p2"].mode = "hang_commit"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200
    assert (body["outcome"], body["state"]) == ("committed", "committing")
    assert {b["name"]: b["pending"] for b in body["branches"]} == {"p1": False, "p2": True}


async def test_wait_decision_answers_once_the_decision_is_durable(harness: Harness) -> None:
    import time

    harness.participants["p2"].mode = "hang_commit"
    _, begun = await harness.call("POST", "/v1/transactions", json={"participants": TWO})
    started = time.monotonic()
    status, body = await harness.call("POST", f"/v1/transactions/{begun['gtid']}/commit?wait=decision")
    assert status == 200 and body["outcome"] == "committed"
    assert time.monotonic() - started < 1.0  # did not sit out the phase-2 wait (1 s here)
    _, shown = await harness.call("GET", f"/v1/transactions/{begun['gtid']}")
    assert shown["outcome"] == "committed"  # an inquiring participant would hear committed
