"""The decision log: the interface the engine writes to, and its stores."""

from coordinator.log._base import DecisionLog, Fenced, LogStats, LogUnavailable, NodeIdInUse
from coordinator.log._sqlite import SQLiteLog
from coordinator.records import BranchRecord, IdempotencyEntry, NodeRecord, TransactionRecord

__all__ = [
    "BranchRecord",
    "DecisionLog",
    "Fenced",
    "IdempotencyEntry",
    "LogStats",
    "LogUnavailable",
    "NodeIdInUse",
    "NodeRecord",
    "SQLiteLog",
    "TransactionRecord",
]
