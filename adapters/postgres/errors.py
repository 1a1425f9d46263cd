"""What can go wrong with PostgreSQL as a participant, named."""

from __future__ import annotations

__all__ = ["BranchAlreadyCommitted", "BranchLost", "BranchTransactionEnded", "PostgresSetupError"]


class PostgresSetupError(RuntimeError):
    """The server cannot serve as a participant as configured (start-up refuses)."""


class BranchLost(RuntimeError):
    """A branch voted YES here is neither prepared nor committed any more: someone
    rolled it back behind the protocol's back (or, for an abort, committed it).
    Retrying will not help; an operator must look."""


class BranchAlreadyCommitted(RuntimeError):
    """A branch was begun again under a gid that already committed here: refused, so
    that no branch is ever applied twice."""


class BranchTransactionEnded(RuntimeError):
    """The application's SQL committed or rolled back the branch's transaction itself,
    so there is nothing left to prepare: the branch votes no."""
