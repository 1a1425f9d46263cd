"""The participant SDK: what an application embeds to take part in global transactions.

Implement a :class:`Resource` (stage, commit, abort, recover one branch's work), wrap
it in a :class:`Participant`, and mount ``participant.app()`` under ``/twopc`` in your
aiohttp application; ``participant.branch(gtid)`` does a branch's work early (XA style)
for resources that support it. The SDK answers the coordinator's signed protocol calls
idempotently from its local log and resolves branches left in doubt by asking the
coordinator. :class:`CoordinatorClient` talks to the coordinator's REST API.
"""

from participant_sdk._recovery import InquiryRound, outcome_for_branch
from participant_sdk.client import CoordinatorClient, CoordinatorError
from participant_sdk.errors import ParticipantError
from participant_sdk.log import BranchRecord, ParticipantLog, RecordState
from participant_sdk.participant import Participant
from participant_sdk.resource import PrepareResult, Resource
from twopc_core.protocol import BranchStatus, Outcome, Vote

__all__ = [
    "BranchRecord",
    "BranchStatus",
    "CoordinatorClient",
    "CoordinatorError",
    "InquiryRound",
    "Outcome",
    "Participant",
    "ParticipantError",
    "ParticipantLog",
    "PrepareResult",
    "RecordState",
    "Resource",
    "Vote",
    "outcome_for_branch",
]
