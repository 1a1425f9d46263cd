"""A participant whose resource is a PostgreSQL database, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.postgres.resource import PostgresResource, PrepareHandler, PrepareStatement
from participant_sdk import Participant

__all__ = ["postgres_participant"]


def postgres_participant(
    name: str,
    dsn: str,
    secret: str,
    coordinator_url: str | Sequence[str],
    log_path: str | Path,
    *,
    handler: PrepareHandler | None = None,
    statement: PrepareStatement | None = None,
    gid_prefix: str | None = None,
    pool_size: int = 10,
    lock_timeout_ms: int = 5000,
    **participant_options: Any,
) -> Participant:
    """``Participant(name=name, resource=PostgresResource(dsn, ...), ...)``; ``coordinator_url`` is the
    coordinator's base URL, or every replica's.

    Work at prepare goes through ``handler`` (or ``statement``, the same as one SQL
    statement, prepared in one round trip); early prepare through
    ``participant.branch(gtid)``, which yields a psycopg connection inside the branch::

        pg = postgres_participant("bank-a", dsn, secret, coordinator_url, "var/bank-a.db")
        async with pg.branch(gtid) as conn:
            await conn.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 'alice'")
    """
    resource = PostgresResource(
        dsn,
        name,
        handler=handler,
        statement=statement,
        gid_prefix=gid_prefix,
        pool_size=pool_size,
        lock_timeout_ms=lock_timeout_ms,
    )
    return Participant(
        name=name,
        resource=resource,
        secret=secret,
        coordinator_url=coordinator_url,
        log_path=log_path,
        **participant_options,
    )
