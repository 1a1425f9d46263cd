"""The participant SDK: what an application embeds to take part in global transactions.

Implement a :class:`Resource` (stage, commit, abort, recover one branch's work), wrap
it in a :class:`Participant` (keywords, or :class:`ParticipantSettings` from the
environment), and mount its protocol under ``/twopc``: ``participant.asgi()`` in
FastAPI or Starlette (``lifespan=participant.lifespan``), ``participant.app()`` in
aiohttp; ``participant.branch(gtid)`` does a branch's work early (XA style) for
resources that support it. The SDK answers the coordinator's signed protocol calls
idempotently from its local log and resolves branches left in doubt by asking the
coordinator. :class:`CoordinatorClient` talks to the coordinator's REST API, its answers
typed (:mod:`participant_sdk.models`). ``docs/embedding.md`` walks through all of it.

What cannot be done raises a :class:`ParticipantError` (a subclass for each case); a
service that lets those reach :func:`twopc_core.http.error_middleware` with
:data:`PARTICIPANT_ERRORS` answers them as the protocol app does. The protocol app takes
bodies up to :data:`MAX_BODY_BYTES` unless told otherwise (413 beyond).

Logs: call :func:`setup_logging` (``twopc_core.telemetry.setup``) once, at the start of
the service, so that the SDK's lines, the service's own structlog lines and the stdlib
lines of its libraries (uvicorn, aiohttp) share one format (``TWOPC_LOG_FORMAT``).
"""

from participant_sdk._branch import outcome_for_branch
from participant_sdk._core import BatchResult, BranchAnswer
from participant_sdk._edge import MAX_BODY_BYTES, PARTICIPANT_ERRORS
from participant_sdk._recovery import InquiryRound
from participant_sdk.client import CoordinatorClient, CoordinatorError
from participant_sdk.errors import (
    AlreadyCommitted,
    BranchExists,
    CoordinatorUnreachable,
    EnlistFailed,
    EnlistRefused,
    LogWriteFailed,
    NotInDoubt,
    NotPrepared,
    ParticipantError,
    PayloadMismatch,
    ResourceFailed,
)
from participant_sdk.log import BranchRecord, ParticipantLog, RecordState
from participant_sdk.models import AuditPage, Began, Cluster, Transaction, TransactionPage
from participant_sdk.participant import Participant
from participant_sdk.resource import PrepareResult, Resource
from participant_sdk.settings import ParticipantConfigError, ParticipantSettings
from twopc_core.protocol import BranchStatus, Outcome, Vote
from twopc_core.telemetry import setup as setup_logging

__all__ = [
    "MAX_BODY_BYTES",
    "PARTICIPANT_ERRORS",
    "AlreadyCommitted",
    "AuditPage",
    "BatchResult",
    "Began",
    "BranchAnswer",
    "BranchExists",
    "BranchRecord",
    "BranchStatus",
    "Cluster",
    "CoordinatorClient",
    "CoordinatorError",
    "CoordinatorUnreachable",
    "EnlistFailed",
    "EnlistRefused",
    "InquiryRound",
    "LogWriteFailed",
    "NotInDoubt",
    "NotPrepared",
    "Outcome",
    "Participant",
    "ParticipantConfigError",
    "ParticipantError",
    "ParticipantLog",
    "ParticipantSettings",
    "PayloadMismatch",
    "PrepareResult",
    "RecordState",
    "Resource",
    "ResourceFailed",
    "Transaction",
    "TransactionPage",
    "Vote",
    "outcome_for_branch",
    "setup_logging",
]
