"""`twopc pg recover`: an operator settles a participant's orphaned prepared transactions
by asking the coordinator, with the participant service gone."""

from __future__ import annotations

import asyncio
import json
import sys

from pg_harness import NAME, PgService, prepare_by_hand, prepared_gids, rows

from adapters.postgres import GidScheme, resolve_orphans
from participant_sdk.testing import StubCoordinator

OURS = GidScheme.for_participant(NAME)


async def leave_orphans(service: PgService, stub: StubCoordinator) -> None:
    """Five of our branches prepared, one per kind of outcome, then the service is gone."""
    for gtid in ("won", "lost", "forgotten", "without-us", "pending"):
        _, body = await service.prepare(gtid, {"id": gtid, "note": gtid})
        assert body["vote"] == "yes", body
    await service.stop()
    stub.decide("won", "committed", branches=[NAME, "other"])
    stub.decide("lost", "aborted")
    stub.decide("without-us", "committed", branches=["other"])
    stub.decide("pending", None)
    # "forgotten" is never decided: the coordinator has no record of it.


async def test_recover_applies_the_coordinators_outcomes_and_leaves_the_undecided(
    service: PgService, database: str, other_database: str, coordinator: tuple[StubCoordinator, str]
) -> None:
    stub, url = coordinator
    await leave_orphans(service, stub)
    await prepare_by_hand(database, "twopc:other:won:other")
    # Gids are unique across the server, so ours in another database has another gtid.
    await prepare_by_hand(other_database, OURS.gid("elsewhere", NAME))

    results = await resolve_orphans(database, url, OURS)

    assert {r.gtid: r.action for r in results} == {
        "won": "committed",
        "lost": "rolled_back",
        "forgotten": "rolled_back",
        "without-us": "rolled_back",
        "pending": "undecided",
    }
    assert await rows(database) == {"won": "won"}
    assert await prepared_gids(database) == sorted([OURS.gid("pending", NAME), "twopc:other:won:other"])
    assert await prepared_gids(other_database) == [OURS.gid("elsewhere", NAME)]

    # The participant comes back: its log still says prepared; it hears the same outcomes.
    stub.decide("pending", "aborted")
    await service.start()
    assert service.participant.in_doubt() == []
    assert await rows(database) == {"won": "won"}
    assert await prepared_gids(database) == ["twopc:other:won:other"]


async def test_a_dry_run_changes_nothing(
    service: PgService, database: str, coordinator: tuple[StubCoordinator, str]
) -> None:
    stub, url = coordinator
    await leave_orphans(service, stub)

    results = await resolve_orphans(database, url, OURS, dry_run=True)

    assert {r.gtid: r.action for r in results}["won"] == "would_commit"
    assert {r.gtid: r.action for r in results}["lost"] == "would_roll_back"
    assert len(await prepared_gids(database)) == 5


async def test_the_command_prints_what_it_did(
    service: PgService, database: str, coordinator: tuple[StubCoordinator, str]
) -> None:
    stub, url = coordinator
    await leave_orphans(service, stub)

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "pg", "recover", "--dsn", database, "--coordinator", url,
        "--participant", NAME,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert any(line.startswith("committed") and OURS.gid("won", NAME) in line for line in lines)
    assert any(line.startswith("undecided") and OURS.gid("pending", NAME) in line for line in lines)
    assert sum(line.startswith("rolled_back") for line in lines) == 3
    assert "5 prepared transaction(s)" in err.decode()
    assert await prepared_gids(database) == [OURS.gid("pending", NAME)]


async def test_the_command_asks_the_next_coordinator_replica_when_the_first_is_down(
    service: PgService, database: str, coordinator: tuple[StubCoordinator, str], stopped_coordinator: str
) -> None:
    stub, url = coordinator
    await leave_orphans(service, stub)

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "pg", "recover", "--dsn", database,
        "--coordinator", stopped_coordinator, "--coordinator", url, "--participant", NAME, "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, err.decode()
    actions = sorted(json.loads(line)["action"] for line in out.decode().splitlines())
    assert actions == ["committed", "rolled_back", "rolled_back", "rolled_back", "undecided"]
    assert await prepared_gids(database) == [OURS.gid("pending", NAME)]


async def test_the_command_refuses_bad_arguments_clearly(database: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "pg", "recover", "--dsn", database, "--coordinator", "http://127.0.0.1:9",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 2
    assert "--participant" in err.decode() and "--gid-prefix" in err.decode()
