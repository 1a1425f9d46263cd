"""Early prepare: the application's SQL inside ``participant.branch(gtid)``; on exit the
branch is prepared, logged as voted yes and enlisted with the coordinator."""

from __future__ import annotations

import pytest
from pg_harness import NAME, PgService, prepared_gids, rows

from participant_sdk import BranchExists, EnlistFailed, EnlistRefused
from participant_sdk.testing import StubCoordinator


async def test_a_clean_exit_prepares_logs_and_enlists_the_branch(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    async with service.participant.branch("g1") as conn:
        await conn.execute("INSERT INTO items VALUES ('a', 'early')")

    assert await prepared_gids(database) == [service.gid("g1")]
    assert await service.status("g1") == "prepared"
    assert stub.enlisted == {"g1": [{"name": NAME, "prepared": True}]}
    assert await rows(database) == {}

    assert (await service.commit("g1"))[1]["status"] == "committed"  # the coordinator's phase 2
    assert await rows(database) == {"a": "early"}
    assert await prepared_gids(database) == []


async def test_an_exception_inside_rolls_back_and_enlists_nothing(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with service.participant.branch("g1") as conn:
            await conn.execute("INSERT INTO items VALUES ('a', 'never')")
            _ = 1 / 0

    assert await prepared_gids(database) == []
    assert await rows(database) == {}
    assert stub.enlisted == {}
    assert await service.status("g1") == "unknown"


async def test_a_refused_enlistment_aborts_the_branch(service: PgService, database: str, stub: StubCoordinator) -> None:
    stub.refuse_enlist.add("g1")

    with pytest.raises(EnlistRefused) as refused:
        async with service.participant.branch("g1") as conn:
            await conn.execute("INSERT INTO items VALUES ('a', 'refused')")

    assert refused.value.details == {"gtid": "g1", "branch": NAME, "coordinator_error": "wrong_state"}
    assert await prepared_gids(database) == []
    assert await service.status("g1") == "aborted"


async def test_an_unreachable_coordinator_leaves_the_branch_in_doubt_until_it_answers(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    stub.unavailable = True
    with pytest.raises(EnlistFailed, match="stays in doubt"):
        async with service.participant.branch("g1") as conn:
            await conn.execute("INSERT INTO items VALUES ('a', 'in doubt')")

    assert await service.status("g1") == "prepared"
    stub.unavailable = False
    stub.decide("g1", "committed", branches=[NAME])  # the enlistment did arrive after all
    assert (await service.participant.resolve_in_doubt()).committed == 1
    assert await rows(database) == {"a": "in doubt"}
    assert await prepared_gids(database) == []


async def test_a_transaction_committed_without_the_branch_aborts_it(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    async with service.participant.branch("g1", enlist=False) as conn:
        await conn.execute("INSERT INTO items VALUES ('a', 'not enlisted')")
    stub.decide("g1", "committed", branches=["someone-else"])

    result = await service.participant.resolve_in_doubt()

    assert (result.committed, result.aborted) == (0, 1)
    assert await rows(database) == {}
    assert await prepared_gids(database) == []


async def test_the_same_branch_cannot_be_opened_twice(service: PgService, database: str) -> None:
    async with service.participant.branch("g1") as conn:
        await conn.execute("INSERT INTO items VALUES ('a', 'first')")

    with pytest.raises(BranchExists) as twice:
        async with service.participant.branch("g1") as conn:
            await conn.execute("INSERT INTO items VALUES ('b', 'second')")

    assert twice.value.details == {"gtid": "g1", "branch": NAME, "status": "prepared"}
    assert await prepared_gids(database) == [service.gid("g1")]


async def test_a_resource_without_early_prepare_says_so(tmp_path, coordinator) -> None:
    from participant_sdk import Participant
    from participant_sdk.testing import InMemoryResource

    participant = Participant(
        name="mem", resource=InMemoryResource(), secret="s", coordinator_url=coordinator[1], log_path=tmp_path / "p.db"
    )
    async with participant:
        with pytest.raises(NotImplementedError, match="early prepare"):
            async with participant.branch("g1"):
                pass
        assert participant.in_doubt() == []
