"""An operator can see why calls are refused: each refusal is a warning with its reason,
rate-limited so a coordinator retrying with the wrong secret does not flood the log."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sdk_harness import SECRET, prepare_body
from structlog.testing import capture_logs

from participant_sdk import Participant
from participant_sdk._rejections import RejectionLog
from participant_sdk.testing import InMemoryResource, ParticipantTestServer, StubCoordinator
from twopc_core.testing import wait_until


def _refusals(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in logs if line["event"] == "protocol call refused"]


async def test_a_participant_built_with_a_wrong_secret_logs_the_rejection_with_its_reason(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    def misconfigured(**options: object) -> Participant:
        return Participant(
            name="p1",
            resource=InMemoryResource(),
            secret="not-the-coordinators-secret",
            coordinator_url=coordinator[1],
            log_path=tmp_path / "p.db",
            inquiry_interval=60.0,
        )

    # The test server signs as the coordinator does, with the coordinator's secret.
    async with ParticipantTestServer(misconfigured, "p1", SECRET) as server:
        with capture_logs() as logs:
            status, _ = await server.prepare("g1")

    assert status == 401
    (line,) = _refusals(logs)
    assert line["log_level"] == "warning"
    assert line["reason"] == "signature does not match"
    assert line["operation"] == "prepare"
    assert line["participant"] == "p1"


async def test_a_stale_timestamp_is_logged_as_such(harness: ParticipantTestServer) -> None:
    with capture_logs() as logs:
        status, _ = await harness.call("prepare", prepare_body("g1"), now=time.time() - 3600)

    assert status == 401
    assert [line["reason"] for line in _refusals(logs)] == ["signature timestamp is stale"]


async def test_repeated_refusals_for_one_reason_make_one_line(harness: ParticipantTestServer) -> None:
    with capture_logs() as logs:
        for _ in range(5):
            status, _ = await harness.call("prepare", prepare_body("g1"), secret="wrong")
            assert status == 401
        await harness.call("prepare", prepare_body("g1"), now=time.time() - 3600)

    assert [line["reason"] for line in _refusals(logs)] == ["signature does not match", "signature timestamp is stale"]


def _clock(start: float) -> tuple[list[float], Callable[[], float]]:
    now = [start]
    return now, lambda: now[0]


def test_after_the_interval_a_reason_is_logged_again_with_the_count_not_logged() -> None:
    now, clock = _clock(1000.0)
    rejections = RejectionLog("p1", interval=60.0, clock=clock)
    with capture_logs() as logs:
        rejections.refused("protocol call refused", "signature does not match")
        now[0] += 30
        rejections.refused("protocol call refused", "signature does not match")
        rejections.refused("protocol call refused", "signature does not match")
        now[0] += 31
        rejections.refused("protocol call refused", "signature does not match")

    assert [line["unlogged_since_last"] for line in logs] == [0, 2]


async def test_the_coordinator_refusing_an_inquiry_is_logged_with_its_reason(tmp_path: Path) -> None:
    refusing = StubCoordinator()
    resource = InMemoryResource()
    resource.prepared[("g1", "p1")] = None  # in doubt at start: the first round asks about it
    async with refusing.serve() as url:
        participant = Participant(
            name="p1", resource=resource, secret=SECRET, coordinator_url=url, log_path=tmp_path / "p.db"
        )
        refusing.refuse_signature = "participant 'p1': signature does not match"
        with capture_logs() as logs:
            async with participant:
                await wait_until(lambda: participant.inquiry_rounds >= 1, message="the first in-doubt round")
                await participant.resolve_in_doubt()  # refused again: within the interval, not logged

    (line,) = [line for line in logs if line["event"] == "coordinator refused the participant's inquiry"]
    assert line["log_level"] == "warning"
    assert line["reason"] == "invalid_signature: participant 'p1': signature does not match"
