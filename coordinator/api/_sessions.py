"""The admin page's browser sessions: a bearer token pasted once, then a cookie.

The cookie holds a random session id, never the token: the server keeps which
principal each id stands for (in memory, so a restart signs everyone out). The cookie
is HttpOnly, SameSite=Strict, Secure over TLS and sent only to ``/ui``; the auth layer
accepts it for the admin page's routes alone, so the JSON API keeps needing a bearer
header and gains no CSRF exposure. Each form that changes something carries a CSRF
token, the HMAC of the session id under a key made when the process starts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from coordinator.auth import ANONYMOUS, Authenticator, Principal

__all__ = ["SESSIONS", "SESSION_COOKIE", "SESSION_ID", "Sessions"]

SESSION_COOKIE = "twopc_session"
#: Where the admin page lives: the only path the cookie is sent to.
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class _Session:
    principal: Principal
    expires_at: float


class Sessions:
    """Session ids by the principal they stand for, bounded in number and in time."""

    def __init__(
        self,
        authenticator: Authenticator,
        ttl_seconds: float = 8 * 3600.0,
        limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._authenticator = authenticator
        self.ttl_seconds = ttl_seconds
        self._limit = limit
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._csrf_key = secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        """Authentication is on: a page needs a session (else everyone is anonymous)."""
        return self._authenticator.enabled

    def identify(self, token: str) -> Principal:
        """Whoever ``token`` is; :class:`Unauthenticated` if nobody."""
        return self._authenticator.authenticate({"Authorization": f"Bearer {token.strip()}"}, "GET", "/ui", b"")

    def open(self, principal: Principal) -> str:
        """A new session for ``principal``: its id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(principal, self._clock() + self.ttl_seconds)
        while len(self._sessions) > self._limit:  # the oldest sign-in goes first
            self._sessions.popitem(last=False)
        return session_id

    def principal(self, session_id: str | None) -> Principal | None:
        """Who the session stands for, or ``None`` (no such session, or expired)."""
        if not self.enabled:
            return ANONYMOUS
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session.principal

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def csrf(self, session_id: str) -> str:
        """The token a form of this session carries."""
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, session_id: str, presented: str) -> bool:
        return hmac.compare_digest(self.csrf(session_id), presented)

    def set_cookie(self, request: web.Request, response: web.StreamResponse, session_id: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(self.ttl_seconds),
            path=COOKIE_PATH,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)


SESSIONS = web.AppKey("sessions", Sessions)
#: The session a page request came with ("" when authentication is off).
SESSION_ID = web.RequestKey("session_id", str)
