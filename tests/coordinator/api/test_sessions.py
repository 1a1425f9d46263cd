"""The admin page's sessions: what a cookie stands for, for how long, and the CSRF
token bound to it."""

from __future__ import annotations

import pytest

from coordinator.api._sessions import Sessions
from coordinator.auth import Authenticator, Unauthenticated
from coordinator.config import AuthSettings
from twopc_core.testing import FakeClock
from twopc_core.tokens import new_token, token_hash

READER = new_token()


def _sessions(clock: FakeClock, ttl_seconds: float = 3600.0, limit: int = 100) -> Sessions:
    settings = AuthSettings.model_validate(
        {"tokens": [{"name": "reader", "sha256": token_hash(READER), "roles": ["reader"]}]}
    )
    return Sessions(Authenticator(settings, {}), ttl_seconds, limit, clock=clock.now)


def test_a_session_stands_for_its_tokens_principal_until_it_expires() -> None:
    clock = FakeClock()
    sessions = _sessions(clock, ttl_seconds=60)
    session_id = sessions.open(sessions.identify(f" {READER} "))

    principal = sessions.principal(session_id)
    assert principal is not None and principal.name == "reader" and principal.has("reader")
    assert READER not in session_id
    clock.advance(59)
    assert sessions.principal(session_id) is not None
    clock.advance(1)
    assert sessions.principal(session_id) is None
    assert sessions.principal("") is None and sessions.principal(None) is None


def test_a_token_nobody_has_opens_no_session() -> None:
    with pytest.raises(Unauthenticated):
        _sessions(FakeClock()).identify("twopc_not-a-token-anyone-has")


def test_the_oldest_session_goes_first_past_the_bound() -> None:
    sessions = _sessions(FakeClock(), limit=2)
    first, second, third = (sessions.open(sessions.identify(READER)) for _ in range(3))
    assert sessions.principal(first) is None
    assert sessions.principal(second) is not None and sessions.principal(third) is not None


def test_a_csrf_token_matches_its_own_session_only_and_not_another_process() -> None:
    sessions = _sessions(FakeClock())
    mine, theirs = sessions.open(sessions.identify(READER)), sessions.open(sessions.identify(READER))
    assert sessions.csrf_matches(mine, sessions.csrf(mine))
    assert not sessions.csrf_matches(mine, sessions.csrf(theirs))
    assert not sessions.csrf_matches(mine, "")
    # A key of its own per process: a token from before a restart is worth nothing.
    assert not _sessions(FakeClock()).csrf_matches(mine, sessions.csrf(mine))
