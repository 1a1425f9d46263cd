"""The SDK's domain errors and the one table that answers them over HTTP."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from participant_sdk import PARTICIPANT_ERRORS, errors
from participant_sdk.errors import EnlistRefused, ParticipantError
from twopc_core.failpoints import FailpointError
from twopc_core.http import error_middleware

#: The statuses and codes the participant protocol and its users have always seen.
WIRE = {
    "NotPrepared": (409, "not_prepared"),
    "PayloadMismatch": (409, "payload_mismatch"),
    "AlreadyCommitted": (409, "already_committed"),
    "BranchExists": (409, "branch_exists"),
    "NotInDoubt": (409, "not_in_doubt"),
    "EnlistRefused": (409, "enlist_refused"),
    "ResourceFailed": (503, "resource_error"),
    "LogWriteFailed": (503, "log_error"),
    "EnlistFailed": (503, "enlist_failed"),
    "CoordinatorUnreachable": (503, "coordinator_unreachable"),
}


def _subclasses() -> list[type[ParticipantError]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [cls for cls in found if issubclass(cls, ParticipantError) and cls is not ParticipantError]


def test_every_participant_error_has_a_status_and_a_code() -> None:
    assert {cls.__name__ for cls in _subclasses()} <= {cls.__name__ for cls in PARTICIPANT_ERRORS}


@pytest.mark.parametrize("cls", _subclasses(), ids=lambda cls: cls.__name__)
def test_each_participant_error_keeps_its_status_and_code_on_the_wire(cls: type[ParticipantError]) -> None:
    assert PARTICIPANT_ERRORS[cls] == WIRE[cls.__name__]


def test_a_failpoint_is_a_503_failpoint() -> None:
    assert PARTICIPANT_ERRORS[FailpointError] == (503, "failpoint")


def test_a_participant_error_carries_no_http_status() -> None:
    refused = EnlistRefused("refused", {"gtid": "g1"})

    assert not hasattr(refused, "status")
    assert (refused.message, refused.details) == ("refused", {"gtid": "g1"})


async def test_a_service_answers_a_participant_error_it_lets_through_as_the_protocol_does() -> None:
    async def early(_request: web.Request) -> web.Response:
        raise EnlistRefused("the coordinator refused", {"gtid": "g1", "branch": "p1", "coordinator_error": "x"})

    app = web.Application(middlewares=[error_middleware(PARTICIPANT_ERRORS, service="a service")])
    app.router.add_post("/early", early)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/early")
        body = await response.json()

    assert response.status == 409
    assert body == {
        "error": {
            "code": "enlist_refused",
            "message": "the coordinator refused",
            "details": {"gtid": "g1", "branch": "p1", "coordinator_error": "x"},
        }
    }
