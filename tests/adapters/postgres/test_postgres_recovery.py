"""Recovery: prepared transactions of this participant (its gid prefix, its database)
are found at start and by the periodic sweep and settled by asking the coordinator;
nothing of another participant or database is touched."""

from __future__ import annotations

from pg_harness import NAME, PgService, prepare_by_hand, prepared_gids, rows

from participant_sdk.testing import StubCoordinator
from twopc_core.testing import wait_until


async def test_a_restart_settles_prepared_branches_by_the_coordinators_outcome(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    await service.prepare("win", {"id": "a", "note": "committed after restart"})
    await service.prepare("lose", {"id": "b", "note": "aborted after restart"})
    await service.stop()  # the process is gone; PostgreSQL keeps both prepared
    assert await prepared_gids(database) == sorted([service.gid("win"), service.gid("lose")])
    stub.decide("win", "committed", branches=[NAME])
    stub.decide("lose", "aborted")

    await service.start()  # its first in-doubt round asks about both

    assert await rows(database) == {"a": "committed after restart"}
    assert await prepared_gids(database) == []


async def test_prepared_branches_the_log_lost_are_found_at_start(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    await service.prepare("g1", {"id": "a", "note": "found"})
    stub.decide("g1", "committed", branches=[NAME])

    await service.restart(lose_log=True)

    assert await rows(database) == {"a": "found"}
    assert await prepared_gids(database) == []


async def test_the_periodic_sweep_finds_branches_prepared_behind_the_logs_back(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    await service.restart(sweep_interval=0.2, inquiry_interval=0.2)
    # As left by a crashed process of the same participant whose log is gone.
    await prepare_by_hand(database, service.gid("orphan"), note="orphan")
    stub.decide("orphan", "aborted")

    await wait_until(lambda: _none_prepared(database), timeout=10, message="the orphan to be rolled back")
    assert await service.status("orphan") == "aborted"
    assert await rows(database) == {}


async def test_recovery_never_touches_another_prefix_or_another_database(
    service: PgService, database: str, other_database: str, stub: StubCoordinator
) -> None:
    foreign_prefix = "twopc:someone-else:g1:someone-else"
    hand_made = "made-by-hand-1"
    same_prefix_elsewhere = service.gid("g1")  # our gid, but in another database
    await prepare_by_hand(database, foreign_prefix)
    await prepare_by_hand(database, hand_made)
    await prepare_by_hand(other_database, same_prefix_elsewhere)
    stub.decide("g1", "aborted")

    await service.restart(sweep_interval=0.1, inquiry_interval=0.1)
    await wait_until(lambda: service.participant.inquiry_rounds >= 3, message="a few recovery rounds")
    assert await service.participant.sweep() == 0
    assert (await service.participant.resolve_in_doubt()).asked == 0

    assert await prepared_gids(database) == sorted([foreign_prefix, hand_made])
    assert await prepared_gids(other_database) == [same_prefix_elsewhere]
    assert await service.resource.recover() == []
    assert (await service.resource.prepared_stats()).count == 0


async def _none_prepared(dsn: str) -> bool:
    return await prepared_gids(dsn) == []


async def test_an_undecided_transaction_stays_prepared(
    service: PgService, database: str, stub: StubCoordinator
) -> None:
    await service.prepare("g1", {"id": "a", "note": "waiting"})
    stub.decide("g1", None)

    result = await service.participant.resolve_in_doubt()

    assert result.undecided == 1
    assert await prepared_gids(database) == [service.gid("g1")]
