"""The engine: each transaction's state machine and the driver that runs its rounds."""

from coordinator.engine._machine import (
    Branch,
    BranchState,
    Conflict,
    ProtocolError,
    Transaction,
    TxState,
    WrongState,
)

__all__ = ["Branch", "BranchState", "Conflict", "ProtocolError", "Transaction", "TxState", "WrongState"]
