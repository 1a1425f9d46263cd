"""The decision log: the interface the engine writes to, and its stores."""

from coordinator.log._base import DecisionLog, LogStats
from coordinator.log._sqlite import SQLiteLog
from coordinator.records import BranchRecord, IdempotencyEntry, TransactionRecord

__all__ = ["BranchRecord", "DecisionLog", "IdempotencyEntry", "LogStats", "SQLiteLog", "TransactionRecord"]
