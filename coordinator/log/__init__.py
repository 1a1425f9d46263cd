"""The decision log: the interface the engine writes to, and its stores.

:class:`PostgresLog` needs the ``postgres`` extra (psycopg); it is imported only when
asked for, so that a coordinator on SQLite runs on the core install alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coordinator.log._base import DecisionLog, Fenced, LogStats, LogUnavailable, NodeIdInUse
from coordinator.log._sqlite import SQLiteLog
from coordinator.records import BranchRecord, IdempotencyEntry, NodeRecord, TransactionRecord

if TYPE_CHECKING:
    from coordinator.log._postgres import PostgresLog

__all__ = [
    "BranchRecord",
    "DecisionLog",
    "Fenced",
    "IdempotencyEntry",
    "LogStats",
    "LogUnavailable",
    "NodeIdInUse",
    "NodeRecord",
    "PostgresLog",
    "SQLiteLog",
    "TransactionRecord",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresLog":
        try:
            from coordinator.log._postgres import PostgresLog
        except ImportError as exc:
            raise ImportError(
                f"the PostgreSQL decision log needs the postgres extra: pip install 'twopc[postgres]' ({exc})"
            ) from exc
        return PostgresLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
