"""Who may call what: the REST API's one table of access rules, and the middleware
that applies it before any handler runs.

Each route has a name and an entry in :data:`ACCESS`; a route without one is refused
(a test checks that every route has one). A call without valid credentials is a 401,
one whose roles do not allow it a 403. The admin page's routes (``page``) take the
browser's session cookie instead (:mod:`coordinator.api._sessions`), and no API
route takes it. Which *transaction* a caller may touch is the
second half of the rule (:func:`check_transaction`), applied by the handlers once
they know the transaction: a client touches only those it began, a participant only
those in which it has a branch; to anyone else such a transaction does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from coordinator.api._sessions import SESSION_COOKIE, SESSION_ID, Sessions
from coordinator.auth import Authenticator, Principal, Unauthenticated
from coordinator.engine import NotFound
from twopc_core.http import Handler, HttpError, Middleware, error_body, json_response
from twopc_core.rejections import RateLimitedWarnings
from twopc_core.signing import PARTICIPANT_HEADER

__all__ = ["ACCESS", "PRINCIPAL", "Access", "auth_middleware", "check_transaction", "principal_of"]

log = structlog.get_logger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass(frozen=True)
class Access:
    """Who may call a route: anyone (``public``), or a token with one of ``roles``, or
    (``participants``) a participant signing its own call. A ``page`` of the admin page
    is HTML for a browser, out of the API document; its credentials are the session
    cookie, not a bearer header."""

    roles: frozenset[str] = frozenset()
    participants: bool = False
    public: bool = False
    page: bool = False


def _roles(*roles: str, participants: bool = False) -> Access:
    return Access(frozenset(roles), participants)


def _page(*roles: str) -> Access:
    return Access(frozenset(roles), page=True, public=not roles)


PUBLIC = Access(public=True)

#: The rules, by route name. ``reader`` reads all; ``client`` drives what it began;
#: ``operator`` (which implies reader) also settles stuck work.
ACCESS: dict[str, Access] = {
    "begin": _roles("client"),
    "execute": _roles("client"),
    "enlist": _roles("client", participants=True),
    "commit": _roles("client"),
    "abort": _roles("client"),
    "get_transaction": _roles("client", "reader", participants=True),
    "list_transactions": _roles("reader"),
    "resolve": _roles("operator"),
    "audit": _roles("reader"),
    "participants": _roles("reader"),
    "cluster": _roles("reader"),
    "metrics": _roles("reader"),
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "openapi": PUBLIC,
    # The admin page: signing in and its stylesheet are open; reading needs reader,
    # acting operator.
    "ui_login_form": _page(),
    "ui_login": _page(),
    "ui_logout": _page(),
    "ui_stylesheet": _page(),
    "ui_overview": _page("reader"),
    "ui_transaction": _page("reader"),
    "ui_unfinished": _page("reader"),
    "ui_participants": _page("reader"),
    "ui_audit": _page("reader"),
    "ui_abandon": _page("operator"),
}


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def check_transaction(
    principal: Principal, gtid: str, owner: str | None, branches: frozenset[str], *, read: bool
) -> None:
    """Raise NotFound unless ``principal`` may see (``read``) or drive the transaction
    begun by ``owner`` with ``branches``. Not a 403: whether a transaction exists is
    itself not for those who may not see it."""
    if principal.anonymous:
        return
    if principal.participant:
        allowed = principal.name in branches
    else:
        allowed = (read and principal.has("reader")) or (principal.has("client") and owner == principal.name)
    if not allowed:
        raise NotFound(gtid)


def auth_middleware(authenticator: Authenticator, sessions: Sessions, *, public_metrics: bool = False) -> Middleware:
    access = dict(ACCESS)
    if public_metrics:
        access["metrics"] = PUBLIC

    # A client or participant with a wrong token, secret or clock retries for ever: its
    # operator, and this one, see the reason once a minute, not once a call.
    refusals = RateLimitedWarnings(log)

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if request.match_info.http_exception is not None:
            return await handler(request)  # no such route (404) or method (405)
        rule = access.get(route.name or "")
        if rule is None:  # a route nobody wrote a rule for is nobody's
            raise HttpError(403, "forbidden", "this route has no access rule")
        if rule.public:
            return await handler(request)
        if rule.page:
            session_id = request.cookies.get(SESSION_COOKIE, "")
            principal = sessions.principal(session_id)
            if principal is None:
                raise HttpError(401, "sign_in", "sign in with a token first (your session may have expired)")
            _check_roles(principal, rule)
            request[PRINCIPAL] = principal
            request[SESSION_ID] = session_id if sessions.enabled else ""
            return await handler(request)
        body = await request.read() if PARTICIPANT_HEADER in request.headers else b""
        try:
            principal = authenticator.authenticate(request.headers, request.method, request.raw_path, body)
        except Unauthenticated as exc:
            refusals.refused("refused a call", str(exc), code=exc.code, path=request.path, remote=request.remote)
            return json_response(
                error_body(exc.code, str(exc)), 401, headers={"WWW-Authenticate": 'Bearer realm="twopc"'}
            )
        _check_roles(principal, rule)
        request[PRINCIPAL] = principal
        return await handler(request)

    return authorize


def _check_roles(principal: Principal, rule: Access) -> None:
    allowed = (principal.participant and rule.participants) or (
        not principal.participant and any(principal.has(role) for role in rule.roles)
    )
    if not allowed:
        raise HttpError(
            403,
            "forbidden",
            f"{principal.name!r} may not call this: it needs one of the roles {sorted(rule.roles)}",
            {"needs": sorted(rule.roles), "has": sorted(principal.roles)},
        )
