"""The participant protocol over HTTP: each call answers as the first call for its
(gtid, branch) did, and bad input is a 4xx JSON error, never a 500."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sdk_harness import branch_body

from participant_sdk import MAX_BODY_BYTES
from participant_sdk.testing import ParticipantTestServer
from twopc_core.protocol import Vote
from twopc_core.testing import wait_until


async def test_malformed_json_is_a_400_json_error(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("prepare", b"{not json")

    assert status == 400
    assert body["error"]["code"] == "invalid_json"
    assert harness.resource.calls == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gtid": "has spaces", "branch": "p1", "deadline": 1.0}, "gtid"),
        ({"gtid": "g1", "branch": "p1"}, "deadline"),
        ({"gtid": "g1", "branch": "p1", "deadline": 1.0, "surprise": 1}, "surprise"),
        ([1, 2, 3], "body"),
    ],
)
async def test_invalid_request_is_a_400_naming_the_problem(
    harness: ParticipantTestServer, body: object, field: str
) -> None:
    status, answer = await harness.call("prepare", body)

    assert status == 400
    assert answer["error"]["code"] == "invalid_request"
    assert field in answer["error"]["message"]


async def test_unknown_operation_is_a_json_404(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("frobnicate", branch_body("g1"))

    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_yes_vote_is_on_disk_before_the_reply(harness: ParticipantTestServer) -> None:
    status, body = await harness.prepare("g1", {"k": 1})

    assert (status, body) == (200, {"vote": "yes", "reason": None})
    # Read the file with a separate connection: the row must already be committed.
    with sqlite3.connect(harness.participant.log.path) as db:
        rows = db.execute("SELECT status, vote FROM branches WHERE gtid = 'g1'").fetchall()
    assert rows == [("prepared", "yes")]


async def test_repeated_prepare_answers_yes_without_preparing_again(harness: ParticipantTestServer) -> None:
    first = await harness.prepare("g1", {"k": 1})
    second = await harness.prepare("g1", {"k": 1})

    assert first == second == (200, {"vote": "yes", "reason": None})
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_concurrent_duplicate_prepares_reach_the_resource_once(harness: ParticipantTestServer) -> None:
    harness.resource.gate = asyncio.Event()
    calls = [asyncio.create_task(harness.prepare("g1")) for _ in range(3)]
    await wait_until(lambda: harness.resource.calls_of("prepare"), message="first prepare")
    harness.resource.gate.set()
    answers = await asyncio.gather(*calls)

    assert all(answer == (200, {"vote": "yes", "reason": None}) for answer in answers)
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_prepare_with_another_payload_is_a_409_payload_mismatch(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1", {"k": 1})
    status, body = await harness.prepare("g1", {"k": 2})

    assert status == 409
    assert body["error"]["code"] == "payload_mismatch"


async def test_no_vote_carries_the_reason_and_is_repeated(harness: ParticipantTestServer) -> None:
    harness.resource.vote, harness.resource.reason = Vote.NO, "insufficient funds"
    first = await harness.prepare("g1")
    harness.resource.vote = Vote.YES
    second = await harness.prepare("g1")

    assert first == second == (200, {"vote": "no", "reason": "insufficient funds"})
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]
    assert await harness.status("g1") == "aborted"


async def test_prepare_that_raises_votes_no_with_the_exception_as_reason(harness: ParticipantTestServer) -> None:
    harness.resource.errors["prepare"] = RuntimeError("disk on fire")
    status, body = await harness.prepare("g1")

    assert status == 200
    assert body == {"vote": "no", "reason": "RuntimeError: disk on fire"}
    # Whatever the failed prepare staged is dropped.
    assert harness.resource.calls_of("abort") == [("g1", "p1")]


async def test_read_only_vote_is_remembered(harness: ParticipantTestServer) -> None:
    harness.resource.vote = Vote.READ_ONLY
    first = await harness.prepare("g1")
    second = await harness.prepare("g1")

    assert first == second == (200, {"vote": "read_only", "reason": None})
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_commit_applies_a_prepared_branch_once(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1", {"k": 1})
    first = await harness.call("commit", branch_body("g1"))
    second = await harness.call("commit", branch_body("g1"))

    assert first == second == (200, {"status": "committed", "reason": None})
    assert harness.resource.committed == {("g1", "p1"): {"k": 1}}
    assert harness.resource.calls_of("commit") == [("g1", "p1")]


async def test_commit_of_an_unknown_branch_is_a_409_not_prepared(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("commit", branch_body("g1"))

    assert status == 409
    assert body["error"]["code"] == "not_prepared"
    assert harness.resource.calls == []


async def test_commit_of_an_aborted_branch_answers_aborted(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    await harness.call("abort", branch_body("g1"))
    status, body = await harness.call("commit", branch_body("g1"))

    assert (status, body["status"]) == (200, "aborted")
    assert harness.resource.calls_of("commit") == []


async def test_commit_that_fails_at_the_resource_is_a_503_and_can_be_retried(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    harness.resource.errors["commit"] = ConnectionError("db away")
    failed = await harness.call("commit", branch_body("g1"))
    del harness.resource.errors["commit"]
    retried = await harness.call("commit", branch_body("g1"))

    assert failed[0] == 503
    assert failed[1]["error"]["code"] == "resource_error"
    assert retried == (200, {"status": "committed", "reason": None})


async def test_abort_drops_a_prepared_branch_and_is_repeatable(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    first = await harness.call("abort", branch_body("g1"))
    second = await harness.call("abort", branch_body("g1"))

    assert first == second == (200, {"status": "aborted", "reason": None})
    assert ("g1", "p1") in harness.resource.aborted
    assert harness.resource.prepared == {}
    assert harness.resource.calls_of("abort") == [("g1", "p1")]


async def test_abort_of_an_unknown_branch_makes_a_late_prepare_vote_no(harness: ParticipantTestServer) -> None:
    aborted = await harness.call("abort", branch_body("g1"))
    late = await harness.prepare("g1")

    assert aborted == (200, {"status": "aborted", "reason": None})
    assert late == (200, {"vote": "no", "reason": "already aborted"})
    assert harness.resource.calls_of("prepare") == []


async def test_abort_of_a_committed_branch_is_a_409_already_committed(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    await harness.call("commit", branch_body("g1"))
    status, body = await harness.call("abort", branch_body("g1"))

    assert status == 409
    assert body["error"]["code"] == "already_committed"
    assert harness.resource.committed.keys() == {("g1", "p1")}


async def test_one_phase_commit_prepares_durably_then_commits_once(harness: ParticipantTestServer) -> None:
    request = branch_body("g1", one_phase=True, payload={"k": 1})
    first = await harness.call("commit", request)
    second = await harness.call("commit", request)

    assert first == second == (200, {"status": "committed", "reason": None})
    assert harness.resource.committed == {("g1", "p1"): {"k": 1}}
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]
    assert harness.resource.calls_of("commit") == [("g1", "p1")]
    # On disk before the reply: at least the YES vote, so a crash leaves it in doubt,
    # never unknown (a coordinator recovering the one-phase commit then commits it).
    with sqlite3.connect(harness.participant.log.path) as db:
        assert db.execute("SELECT status FROM branches").fetchall() in ([("prepared",)], [("committed",)])
    assert await harness.status("g1") == "committed"


async def test_one_phase_commit_with_a_no_vote_answers_aborted_with_the_reason(
    harness: ParticipantTestServer,
) -> None:
    harness.resource.vote, harness.resource.reason = Vote.NO, "out of stock"
    status, body = await harness.call("commit", branch_body("g1", one_phase=True, payload={}))

    assert (status, body) == (200, {"status": "aborted", "reason": "out of stock"})
    assert harness.resource.committed == {}
    assert await harness.status("g1") == "aborted"


async def test_status_reports_what_the_log_knows(harness: ParticipantTestServer) -> None:
    await harness.prepare("prepared-one")
    await harness.prepare("committed-one")
    await harness.call("commit", branch_body("committed-one"))
    await harness.call("abort", branch_body("aborted-one"))

    assert await harness.status("never-seen") == "unknown"
    assert await harness.status("prepared-one") == "prepared"
    assert await harness.status("committed-one") == "committed"
    assert await harness.status("aborted-one") == "aborted"


async def test_a_body_too_large_is_a_413_body_too_large(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("prepare", b"{" + b" " * MAX_BODY_BYTES + b"}")

    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert harness.resource.calls == []


async def test_an_unexpected_failure_is_a_json_500_internal_without_its_trace(
    harness: ParticipantTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(harness.participant.log, "lookup", broken)
    status, body = await harness.call("status", branch_body("g1"))

    assert status == 500
    assert body["error"]["code"] == "internal"
    assert "secret internals" not in body["error"]["message"]
