"""What the engine's errors mean over HTTP: the coordinator's entries in the one edge.

Anything a client sends that the API cannot take is a 4xx naming the problem; the
shared edge (:mod:`twopc_core.http`) makes every error a JSON body.
"""

from __future__ import annotations

from coordinator.engine import (
    Conflict,
    Elsewhere,
    IdempotencyMismatch,
    Moved,
    NotFound,
    NotReady,
    UnknownParticipantError,
    WrongState,
)
from coordinator.log import LogUnavailable
from twopc_core.http import DomainErrors, error_middleware

__all__ = ["DOMAIN_ERRORS", "coordinator_errors"]

DOMAIN_ERRORS: DomainErrors = {
    NotFound: (404, "transaction_not_found"),
    UnknownParticipantError: (422, "unknown_participant"),
    IdempotencyMismatch: (422, "idempotency_key_reused"),
    Conflict: (409, "conflict"),
    WrongState: (409, "wrong_state"),
    # This replica cannot answer now; another one, or this one a little later, can.
    NotReady: (503, "not_ready"),
    Moved: (503, "moved"),
    Elsewhere: (503, "held_elsewhere"),
    LogUnavailable: (503, "log_unavailable"),
}

coordinator_errors = error_middleware(DOMAIN_ERRORS, service="the coordinator")
