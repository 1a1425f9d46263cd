"""The decision log: the interface the engine writes to, and its stores."""

from coordinator.log._base import BranchRecord, DecisionLog, IdempotencyEntry, LogStats, TransactionRecord
from coordinator.log._sqlite import SQLiteLog

__all__ = ["BranchRecord", "DecisionLog", "IdempotencyEntry", "LogStats", "SQLiteLog", "TransactionRecord"]
