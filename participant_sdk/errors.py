"""What a participant refuses or fails to do, as domain errors.

None of them knows about HTTP: the SDK's HTTP side answers each with its status and
code from one table (``participant_sdk.PARTICIPANT_ERRORS``), and a service that lets
them reach :func:`twopc_core.http.error_middleware` with that table answers the same.
Catch :class:`ParticipantError` for all of them, or a subclass for one case.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyCommitted",
    "BranchExists",
    "CoordinatorUnreachable",
    "EnlistFailed",
    "EnlistRefused",
    "LogWriteFailed",
    "NotInDoubt",
    "NotPrepared",
    "ParticipantError",
    "PayloadMismatch",
    "ResourceFailed",
]


class ParticipantError(Exception):
    """A protocol call, an early branch or an operator's request that cannot be done.

    ``message`` is for people; ``details`` (a dict, usually with the ``gtid`` and
    ``branch``) for programs.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotPrepared(ParticipantError):
    """A commit for a branch this participant has no record of."""


class PayloadMismatch(ParticipantError):
    """A repeated prepare (or one-phase commit) that carries other work than the first."""


class AlreadyCommitted(ParticipantError):
    """An abort for a branch that is committed here; ``details["heuristic"]`` says whether
    an operator committed it."""


class BranchExists(ParticipantError):
    """An early branch for a ``(gtid, branch)`` this participant already knows."""


class NotInDoubt(ParticipantError):
    """A heuristic outcome forced on a branch that is not prepared here."""


class EnlistRefused(ParticipantError):
    """The coordinator will never commit with this early-prepared branch; it was aborted."""


class ResourceFailed(ParticipantError):
    """The resource failed to commit or abort a branch; the branch stays as it was, and
    the call can be repeated."""


class LogWriteFailed(ParticipantError):
    """The participant log could not make an early branch's YES durable; the work was
    dropped."""


class EnlistFailed(ParticipantError):
    """The coordinator answered an early branch's enlistment with an error that is not a
    refusal; the branch stays prepared and in doubt until the coordinator decides."""


class CoordinatorUnreachable(ParticipantError):
    """The coordinator could not be reached to enlist an early branch; the branch stays
    prepared and in doubt until the coordinator decides."""
