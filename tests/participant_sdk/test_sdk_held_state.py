"""A resource that holds its branches' state: a vote costs no durable write of the
participant log, and a branch the log lost in a crash is answered from the resource."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from participant_sdk import Participant, ParticipantConfigError, PrepareResult, Resource
from participant_sdk._core import BranchHandler
from participant_sdk.errors import AlreadyCommitted, NotPrepared
from participant_sdk.log import ParticipantLog, RecordState
from participant_sdk.testing import InMemoryResource
from twopc_core.protocol import (
    AbortRequest,
    BranchStatus,
    CommitRequest,
    Outcome,
    OutcomeResponse,
    PrepareRequest,
    StatusRequest,
    Vote,
)

G, B = "g1", "p1"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[ParticipantLog]:
    log = ParticipantLog(tmp_path / "p.db")
    await log.open()
    yield log
    await log.close()


def prepare(gtid: str = G) -> PrepareRequest:
    return PrepareRequest(gtid=gtid, branch=B, payload={"n": 1}, deadline=time.time() + 30)


async def test_a_yes_at_a_resource_holding_the_branch_state_makes_no_durable_log_write(log: ParticipantLog) -> None:
    handler = BranchHandler(InMemoryResource(holds_branch_state=True), log)

    answer = await handler.prepare(prepare())

    assert answer.vote is Vote.YES
    assert log.durable_writes == 0
    row = log.get(G, B)
    assert row is not None and row.status is RecordState.PREPARED


async def test_a_yes_at_a_resource_without_the_branch_state_is_logged_durably(log: ParticipantLog) -> None:
    handler = BranchHandler(InMemoryResource(), log)

    await handler.prepare(prepare())

    assert log.durable_writes == 1


async def test_the_lazy_row_of_a_yes_reaches_the_disk(tmp_path: Path, log: ParticipantLog) -> None:
    await BranchHandler(InMemoryResource(holds_branch_state=True), log).prepare(prepare())
    await log.close()

    reopened = ParticipantLog(tmp_path / "p.db")
    await reopened.open()
    try:
        row = reopened.get(G, B)
    finally:
        await reopened.close()
    assert row is not None and (row.status, row.vote) == (RecordState.PREPARED, Vote.YES)


async def test_a_commit_of_a_branch_the_log_lost_after_it_committed_answers_committed(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)
    resource.committed[(G, B)] = {"n": 1}

    answer = await BranchHandler(resource, log).commit(CommitRequest(gtid=G, branch=B))

    assert answer == OutcomeResponse(status=Outcome.COMMITTED)
    assert resource.calls_of("commit") == []
    row = log.get(G, B)
    assert row is not None and row.status is RecordState.COMMITTED


async def test_a_commit_of_a_branch_the_log_lost_while_prepared_commits_it(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)
    resource.prepared[(G, B)] = {"n": 1}

    answer = await BranchHandler(resource, log).commit(CommitRequest(gtid=G, branch=B))

    assert answer.status is Outcome.COMMITTED
    assert resource.calls_of("commit") == [(G, B)] and (G, B) in resource.committed


async def test_an_abort_of_a_branch_the_log_lost_after_it_committed_is_refused(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)
    resource.committed[(G, B)] = {"n": 1}

    with pytest.raises(AlreadyCommitted):
        await BranchHandler(resource, log).abort(AbortRequest(gtid=G, branch=B))
    assert resource.calls_of("abort") == []


async def test_the_status_of_a_branch_the_log_lost_is_the_resources(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)
    resource.committed[(G, B)] = {"n": 1}

    answer = await BranchHandler(resource, log).status(StatusRequest(gtid=G, branch=B))

    assert answer.status is BranchStatus.COMMITTED


async def test_a_branch_unknown_to_both_is_not_prepared(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)

    with pytest.raises(NotPrepared):
        await BranchHandler(resource, log).commit(CommitRequest(gtid=G, branch=B))
    assert resource.calls_of("branch_status") == [(G, B)]


async def test_a_prepare_of_a_live_transaction_does_not_ask_the_resource_about_its_branch(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)

    await BranchHandler(resource, log).prepare(prepare())

    assert resource.calls_of("branch_status") == []


async def test_a_resource_without_the_branch_state_is_never_asked_about_a_branch(log: ParticipantLog) -> None:
    resource = InMemoryResource()
    resource.committed[(G, B)] = {"n": 1}

    with pytest.raises(NotPrepared):
        await BranchHandler(resource, log).commit(CommitRequest(gtid=G, branch=B))
    assert resource.calls_of("branch_status") == []


async def test_a_branch_found_prepared_at_start_is_adopted_without_a_durable_write(log: ParticipantLog) -> None:
    resource = InMemoryResource(holds_branch_state=True)
    resource.prepared[(G, B)] = {"n": 1}

    assert await BranchHandler(resource, log).reconcile() == 1

    assert log.durable_writes == 0
    row = log.get(G, B)
    assert row is not None and row.status is RecordState.PREPARED


class _ClaimsStateWithoutStatus(Resource):
    holds_branch_state = True

    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        return PrepareResult.yes()

    async def commit(self, gtid: str, branch: str) -> None:
        return None

    async def abort(self, gtid: str, branch: str) -> None:
        return None

    async def recover(self) -> list[tuple[str, str]]:
        return []


def test_a_resource_claiming_the_branch_state_without_branch_status_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParticipantConfigError, match="branch_status"):
        Participant(
            name=B,
            resource=_ClaimsStateWithoutStatus(),
            secret="s",
            coordinator_url="http://127.0.0.1:1",
            log_path=tmp_path / "p.db",
        )
