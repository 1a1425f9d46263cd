"""Transaction records as rows of the PostgreSQL log, and the statements that write them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from coordinator.log._pg_schema import NODES, TRANSACTIONS
from coordinator.records import BranchRecord, TransactionRecord

__all__ = [
    "CLAIM",
    "COLUMNS",
    "FENCE",
    "HOLDERS",
    "UNFENCED",
    "UPSERT",
    "Rows",
    "RowsStatement",
    "from_row",
    "returned",
    "rows",
    "send",
]

COLUMNS = (
    "gtid, state, decision, reason, one_phase, commit_requested, finished, created_at, updated_at, deadline,"
    " idempotency_key, request_hash, metadata, branches, owner, principal, heuristic"
)

#: One row of parameters.
_ROW = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)"

#: Many rows as one array per column (binary, so that the driver escapes nothing).
_ARRAYS = (
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bool[], %b::bool[], %b::bool[],"
    " %b::float8[], %b::float8[], %b::float8[], %b::text[], %b::text[], %b::text[]::jsonb[], %b::text[]::jsonb[],"
    " %b::text[], %b::text[], %b::bool[])"
)

#: From this many records on, a batch sends them as one statement of column arrays:
#: building the arrays costs about 0.15 ms more per statement, which the driver's work
#: per row of ``executemany`` repays beyond a handful of rows (measured both ways).
_ARRAYS_FROM = 10


@dataclass(frozen=True)
class RowsStatement:
    """A statement writing a batch of records, in its two forms."""

    #: For ``executemany``, one row of parameters each.
    row_by_row: str
    #: For one ``execute`` of column arrays.
    arrays: str
    #: It returns rows (read them with :func:`returned`).
    returns: bool = False


def _insert(rest: str, returns: bool = False) -> RowsStatement:
    insert = f"INSERT INTO {TRANSACTIONS} ({COLUMNS})"
    return RowsStatement(f"{insert} {_ROW} {rest}", f"{insert} {_ARRAYS} {rest}", returns)


#: Last write wins, as in every store; the writer becomes the owner. What a record is
#: born with (its creation time, its Idempotency-Key) stays. A batch holds one write
#: per gtid (one statement cannot update a row twice).
UPSERT = _insert(
    """ON CONFLICT (gtid) DO UPDATE SET
    state = excluded.state, decision = excluded.decision, reason = excluded.reason,
    one_phase = excluded.one_phase, commit_requested = excluded.commit_requested, finished = excluded.finished,
    updated_at = excluded.updated_at, deadline = excluded.deadline,
    metadata = excluded.metadata, branches = excluded.branches, owner = excluded.owner,
    heuristic = excluded.heuristic"""
)

#: Records that claim their Idempotency-Key: each written only if neither its gtid nor
#: its key is in the log yet (nor earlier in the same batch); the gtids written come back.
CLAIM = _insert("ON CONFLICT DO NOTHING RETURNING gtid", returns=True)

#: Who holds these keys (read in the claiming transaction, after the conflict).
HOLDERS = f"SELECT {COLUMNS} FROM {TRANSACTIONS} WHERE idempotency_key = ANY(%s)"

#: The first statement of every write: the writer's own node row, if it still holds the
#: writer's epoch and a live lease by the database's clock (``clock_timestamp()``, not
#: ``now()``, which is when the transaction began). The row stays locked until the
#: batch commits, so a replica taking this one over waits for the batch, then sees it.
FENCE = f"""
UPDATE {NODES} SET epoch = epoch
WHERE node_id = %s AND epoch = %s AND lease_expires_at > clock_timestamp()
RETURNING epoch
"""

#: BROKEN ON PURPOSE (``log.unsafe_unfenced_decisions``): :data:`FENCE` without the lease
#: condition, so a replica taken over still writes. The epoch parameter is ignored.
UNFENCED = f"""
UPDATE {NODES} SET epoch = epoch
WHERE node_id = %s AND %s::bigint IS NOT NULL
RETURNING epoch
"""


@dataclass(frozen=True)
class Rows:
    """A statement and its parameters for a batch of records, built before anything is
    sent (see :func:`rows`)."""

    statement: RowsStatement
    params: list[tuple[object, ...]] | list[list[object]]
    #: One row of parameters each (``executemany``), else one set of column arrays.
    many: bool


def rows(statement: RowsStatement, records: Sequence[TransactionRecord], owner: str) -> Rows:
    """``statement`` for ``records`` (owned by ``owner``) in the form that costs least
    for that many."""
    params = [_to_row(record, owner) for record in records]
    if len(params) < _ARRAYS_FROM:
        return Rows(statement, params, many=True)
    return Rows(statement, [list(column) for column in zip(*params, strict=True)], many=False)


async def send(cur: psycopg.AsyncCursor[Any], batch: Rows) -> None:
    if batch.many:
        await cur.executemany(batch.statement.row_by_row, batch.params, returning=batch.statement.returns)
    else:
        await cur.execute(batch.statement.arrays, batch.params)


async def returned(cur: psycopg.AsyncCursor[Any]) -> list[Any]:
    """Every row a :func:`send` of a returning statement gave back, in either form."""
    rows: list[Any] = []
    while True:
        rows.extend(await cur.fetchall())
        if not cur.nextset():
            return rows


def _to_row(record: TransactionRecord, owner: str) -> tuple[object, ...]:
    branches = [b.to_json() for b in record.branches]
    return (
        record.gtid,
        record.state,
        record.decision,
        record.reason,
        record.one_phase,
        record.commit_requested,
        record.finished,
        record.created_at,
        record.updated_at,
        record.deadline,
        record.idempotency_key,
        record.request_hash,
        orjson.dumps(record.metadata).decode(),
        orjson.dumps(branches).decode(),
        owner,
        record.principal,
        record.heuristic,
    )


def from_row(row: Sequence[Any]) -> TransactionRecord:
    """The record a row of :data:`COLUMNS` holds, with its owner."""
    (
        gtid,
        state,
        decision,
        reason,
        one_phase,
        commit_requested,
        finished,
        created_at,
        updated_at,
        deadline,
        idempotency_key,
        request_hash,
        metadata,
        branches,
        owner,
        principal,
        heuristic,
    ) = row
    return TransactionRecord(
        gtid=gtid,
        state=state,
        decision=decision,
        reason=reason,
        one_phase=one_phase,
        commit_requested=commit_requested,
        finished=finished,
        created_at=created_at,
        updated_at=updated_at,
        deadline=deadline,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        metadata=metadata,
        branches=tuple(BranchRecord(**b) for b in branches),
        owner=owner,
        principal=principal,
        heuristic=heuristic,
    )
