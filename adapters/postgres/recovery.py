"""The operator's recovery: settle a participant's orphaned prepared transactions by
asking the coordinator, without the participant service (``twopc pg recover``).

Only transactions with the participant's gid prefix in the DSN's database are looked
at. Each one gets the coordinator's outcome for its branch: committed (with this branch
in it) → COMMIT PREPARED; aborted, unknown to the coordinator, or committed without this
branch → ROLLBACK PREPARED; undecided or unreachable → left as it is. When the
participant comes back, its log still says prepared; it asks the coordinator, hears the
same outcome and finds the work already done (see ``PostgresResource.commit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp
import psycopg
from psycopg import errors as pg_errors

from adapters.postgres.gids import GidScheme
from adapters.postgres.prepared import PreparedBranch, list_prepared
from participant_sdk import CoordinatorClient, CoordinatorError, Outcome, outcome_for_branch
from participant_sdk.client import describe_failure
from participant_sdk.models import Transaction

__all__ = ["Action", "Resolution", "resolve_orphans"]

Action = Literal[
    "committed",
    "rolled_back",
    "would_commit",
    "would_roll_back",
    "undecided",
    "coordinator_unreachable",
    "already_resolved",
    "failed",
]


@dataclass(frozen=True, slots=True)
class Resolution:
    gid: str
    gtid: str
    branch: str
    age_seconds: float
    action: Action
    detail: str = ""


async def resolve_orphans(
    dsn: str,
    coordinator_url: str | Sequence[str],
    gids: GidScheme,
    *,
    min_age: float = 0.0,
    dry_run: bool = False,
    timeout: float = 10.0,
    token: str | None = None,
) -> list[Resolution]:
    """Settle the prepared transactions of ``gids``' participant in ``dsn``'s database
    that were prepared at least ``min_age`` seconds ago; return what was done to each.

    ``coordinator_url``: the coordinator's base URL, or every replica's (each inquiry
    goes to the replicas in turn until one answers). ``token``: a bearer token with
    the ``reader`` role, for a coordinator that authenticates its callers.
    """
    results = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        branches = [b for b in await list_prepared(conn, gids) if b.age() >= min_age]
        async with CoordinatorClient(coordinator_url, timeout=timeout, token=token) as coordinator:
            for branch in branches:
                results.append(await _settle(conn, coordinator, branch, dry_run))
    return results


async def _settle(
    conn: psycopg.AsyncConnection, coordinator: CoordinatorClient, branch: PreparedBranch, dry_run: bool
) -> Resolution:
    def answer(action: Action, detail: str = "") -> Resolution:
        return Resolution(branch.gid, branch.gtid, branch.branch, round(branch.age(), 3), action, detail)

    try:
        view = await coordinator.get(branch.gtid)
    except CoordinatorError as exc:
        if exc.status != 404:
            return answer("coordinator_unreachable", describe_failure(exc))
        view = None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return answer("coordinator_unreachable", describe_failure(exc))
    outcome = outcome_for_branch(view, branch.branch)
    if outcome is None:
        return answer("undecided", f"transaction is {view.state if view else 'unknown'}")
    why = _why(view, outcome)
    if dry_run:
        return answer("would_commit" if outcome is Outcome.COMMITTED else "would_roll_back", why)
    try:
        if outcome is Outcome.COMMITTED:
            await conn.tpc_commit(branch.gid)
        else:
            await conn.tpc_rollback(branch.gid)
    except pg_errors.UndefinedObject:
        return answer("already_resolved", "no longer prepared: settled meanwhile by someone else")
    except psycopg.Error as exc:
        return answer("failed", f"{type(exc).__name__}: {exc}")
    return answer("committed" if outcome is Outcome.COMMITTED else "rolled_back", why)


def _why(view: Transaction | None, outcome: Outcome) -> str:
    if view is None:
        return "the coordinator has no record of it: presumed abort"
    if outcome is Outcome.ABORTED and view.outcome is Outcome.COMMITTED:
        return "committed without this branch"
    return f"the coordinator's outcome: {view.outcome}"
