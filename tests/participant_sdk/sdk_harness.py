"""What the participant SDK tests share: a participant on an in-memory resource,
mounted under /twopc on a test server, with its log in a real SQLite file; and the
bodies of protocol calls."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, ParticipantTestServer

SECRET = "test-secret"
BRANCH = "p1"


def prepare_body(gtid: str, payload: Any = None, branch: str = BRANCH) -> dict[str, Any]:
    return {"gtid": gtid, "branch": branch, "payload": payload, "deadline": time.time() + 30}


def branch_body(gtid: str, branch: str = BRANCH, **extra: Any) -> dict[str, Any]:
    return {"gtid": gtid, "branch": branch, **extra}


def participant_server(
    tmp_path: Path,
    coordinator_url: str | Sequence[str],
    resource: InMemoryResource | None = None,
    mount: Literal["aiohttp", "asgi"] = "aiohttp",
) -> ParticipantTestServer:
    """One participant (on a new in-memory resource unless given one); a restart keeps
    its log file and its resource (the resource's state is plain Python, so it survives
    as a durable one would). It runs on the server's ``clock`` as it is at each start,
    served on ``mount``."""
    resource = resource or InMemoryResource()
    log_path = tmp_path / "participant.db"

    def participant(**options: Any) -> Participant:
        return Participant(
            name=BRANCH,
            resource=resource,
            secret=SECRET,
            coordinator_url=coordinator_url,
            log_path=log_path,
            clock=server.clock,
            **options,
        )

    server = ParticipantTestServer(participant, BRANCH, SECRET, options={"inquiry_interval": 60.0}, mount=mount)
    return server
