"""The mock queue service end to end: the signed protocol at /twopc, committed items at
/queue/items, fault switches at /queue/faults, and recovery across restarts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mockqueue_harness import NAME, QueueService

from adapters.mockqueue.faults import GARBAGE
from participant_sdk.log import ParticipantLog, RecordState
from participant_sdk.testing import StubCoordinator
from twopc_core.protocol import Vote


async def test_healthz_answers_ok(queue: QueueService) -> None:
    response = await queue.http.get("/healthz")

    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_two_phase_commit_lists_the_items_once_with_their_gtid(queue: QueueService) -> None:
    assert await queue.prepare("g1", ["a", {"b": 2}]) == (200, {"vote": "yes", "reason": None})
    assert await queue.items() == []
    await queue.commit("g1")
    await queue.commit("g1")

    items = await queue.items()
    assert [(i["gtid"], i["value"]) for i in items] == [("g1", "a"), ("g1", {"b": 2})]
    assert items[0]["seq"] < items[1]["seq"]


async def test_aborted_branch_leaves_nothing_in_the_queue(queue: QueueService) -> None:
    await queue.prepare("g1", ["a"])
    await queue.abort("g1")
    await queue.commit("g1")

    assert await queue.items() == []


async def test_one_phase_commit_appends_the_items(queue: QueueService) -> None:
    body = {"gtid": "g1", "branch": NAME, "one_phase": True, "payload": {"items": [7]}}
    status, answer = await queue.call("commit", body)

    assert (status, answer["status"]) == (200, "committed")
    assert [i["value"] for i in await queue.items()] == [7]


async def test_invalid_payload_votes_no_with_the_reason(queue: QueueService) -> None:
    status, answer = await queue.prepare("g1", {"things": [1]})

    assert status == 200
    assert answer["vote"] == "no"
    assert "items" in answer["reason"]


async def test_faults_can_be_set_read_back_and_cleared(queue: QueueService) -> None:
    status, set_to = await queue.set_faults(vote="no", delay_ms=5)
    read_back = await (await queue.http.get("/queue/faults")).json()
    _, cleared = await queue.set_faults()

    assert status == 200
    assert set_to == read_back == {"vote": "no", "delay_ms": 5, "crash_on": None, "garbage": False}
    assert cleared == {"vote": "yes", "delay_ms": 0, "crash_on": None, "garbage": False}


async def test_invalid_faults_are_a_400(queue: QueueService) -> None:
    status, answer = await queue.set_faults(vote="maybe")

    assert status == 400
    assert answer["error"]["code"] == "invalid_request"


async def test_vote_no_fault_makes_prepare_vote_no(queue: QueueService) -> None:
    await queue.set_faults(vote="no")
    status, answer = await queue.prepare("g1", ["a"])

    assert (status, answer) == (200, {"vote": "no", "reason": "fault injected: vote no"})


async def test_delay_fault_slows_prepare_down(queue: QueueService) -> None:
    await queue.set_faults(delay_ms=150)
    started = time.monotonic()
    await queue.prepare("g1", ["a"])

    assert time.monotonic() - started >= 0.15


async def test_garbage_fault_answers_prepare_with_a_body_that_is_not_json(queue: QueueService) -> None:
    await queue.set_faults(garbage=True)
    status, answer = await queue.prepare("g1", ["a"])
    await queue.set_faults(garbage=False)
    retried = await queue.prepare("g1", ["a"])

    assert (status, answer) == (200, GARBAGE)
    # The prepare itself happened: a retry answers from the log.
    assert retried == (200, {"vote": "yes", "reason": None})


async def test_garbage_fault_garbles_batches_carrying_a_prepare_only(queue: QueueService) -> None:
    await queue.prepare("g0", ["a"])
    await queue.set_faults(garbage=True)
    prepare = {"op": "prepare", "gtid": "g1", "branch": NAME, "payload": {"items": [1]}, "deadline": 1e10}
    commit = {"op": "commit", "gtid": "g0", "branch": NAME}
    with_prepare = await queue.call("batch", {"ops": [prepare]})
    commit_only = await queue.call("batch", {"ops": [commit]})

    assert with_prepare == (200, GARBAGE)
    assert commit_only == (200, {"results": [{"status": "committed", "reason": None}]})


async def test_unsigned_protocol_call_is_refused(queue: QueueService) -> None:
    response = await queue.http.post("/twopc/prepare", json={"gtid": "g1"})

    assert response.status == 401


async def test_faults_that_are_not_json_are_a_400_invalid_json(queue: QueueService) -> None:
    response = await queue.http.post("/queue/faults", data=b"{not json")

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"


async def test_an_unknown_path_is_a_json_404_not_found(queue: QueueService) -> None:
    response = await queue.http.get("/queue/nowhere")

    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_items_query_must_be_integers(queue: QueueService) -> None:
    response = await queue.http.get("/queue/items?after=soon")

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_restart_keeps_prepared_items_and_commits_them_once_when_the_coordinator_says(
    queue: QueueService, stub: StubCoordinator
) -> None:
    await queue.prepare("g1", ["a", "b"])
    stub.decide("g1", "committed")
    await queue.restart()  # the first inquiry round commits g1
    await queue.restart()  # and nothing is applied twice

    assert [(i["gtid"], i["value"]) for i in await queue.items()] == [("g1", "a"), ("g1", "b")]
    assert await queue.call("status", {"gtid": "g1", "branch": NAME}) == (
        200,
        {"status": "committed", "heuristic": False},
    )


async def test_restart_presumes_abort_for_a_transaction_the_coordinator_forgot(
    queue: QueueService, stub: StubCoordinator
) -> None:
    await queue.prepare("g1", ["a"])
    await queue.restart()  # the stub has no record of g1: presumed abort

    assert "g1" in stub.inquiries
    assert await queue.items() == []
    assert (await queue.commit("g1"))[1]["status"] == "aborted"


async def test_a_queue_given_two_coordinator_replicas_settles_an_in_doubt_branch_through_the_one_up(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str], stopped_coordinator: str
) -> None:
    stub, url = coordinator
    queue = QueueService(tmp_path / "replicas", [stopped_coordinator, url])
    await queue.start()
    try:
        await queue.prepare("g1", ["a"])
        stub.decide("g1", "committed", branches=[NAME])
        await queue.restart()  # the restart's first in-doubt round asks about g1
        items = await queue.items()
        status = await queue.status("g1")
    finally:
        await queue.stop()

    assert [(i["gtid"], i["value"]) for i in items] == [("g1", "a")]
    assert status == "committed"
    assert stub.inquiries == ["g1"]


async def test_a_branchs_items_and_its_log_row_live_in_one_database(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    service = await QueueService(tmp_path / "q", coordinator[1]).start()
    try:
        assert (await service.prepare("g1", ["a"]))[1]["vote"] == "yes"
        await service.participant.log.flush()
    finally:
        await service.stop()

    assert not (tmp_path / "q" / "participant.db").exists()
    with sqlite3.connect(tmp_path / "q" / "queue.db") as db:
        assert db.execute("SELECT gtid, status FROM branches").fetchall() == [("g1", "prepared")]
        assert db.execute("SELECT gtid FROM staged").fetchall() == [("g1",)]


async def test_a_participant_log_an_older_version_left_in_its_own_file_stays_in_use(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    legacy = tmp_path / "q" / "participant.db"
    legacy.parent.mkdir()
    log = ParticipantLog(legacy)
    await log.open()
    await log.record("g-old", NAME, RecordState.COMMITTED, durable=True, vote=Vote.YES)
    await log.close()

    service = await QueueService(tmp_path / "q", coordinator[1]).start()
    try:
        assert service.participant.log.path == legacy
        assert (await service.status("g-old")) == "committed"  # the queue itself knows nothing of it
    finally:
        await service.stop()
