"""PostgreSQL as a two-phase-commit participant, on psycopg 3's two-phase API.

- :class:`PostgresResource`: branches as prepared transactions (BEGIN … PREPARE
  TRANSACTION; phase 2 with ``tpc_commit`` / ``tpc_rollback`` by gid), work at
  prepare through a handler or as one statement (one round trip), early prepare through ``Participant.branch(gtid)``,
  recovery from ``pg_prepared_xacts`` by gid prefix and database.
- :func:`postgres_participant`: the resource wrapped in a :class:`~participant_sdk.Participant`.
- :func:`resolve_orphans`: the operator's recovery (``twopc pg recover``), for when the
  participant service itself is gone.
"""

from adapters.postgres.errors import BranchAlreadyCommitted, BranchLost, BranchTransactionEnded, PostgresSetupError
from adapters.postgres.gids import MAX_GID_LENGTH, GidScheme
from adapters.postgres.participant import postgres_participant
from adapters.postgres.prepared import PreparedBranch, PreparedStats, check_prepared_capacity, list_prepared
from adapters.postgres.recovery import Resolution, resolve_orphans
from adapters.postgres.resource import MARKS_TABLE, PostgresResource, PrepareHandler, PrepareStatement

__all__ = [
    "MARKS_TABLE",
    "MAX_GID_LENGTH",
    "BranchAlreadyCommitted",
    "BranchLost",
    "BranchTransactionEnded",
    "GidScheme",
    "PostgresResource",
    "PostgresSetupError",
    "PrepareHandler",
    "PrepareStatement",
    "PreparedBranch",
    "PreparedStats",
    "Resolution",
    "check_prepared_capacity",
    "list_prepared",
    "postgres_participant",
    "resolve_orphans",
]
