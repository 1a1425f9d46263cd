"""The admin page at ``/ui``: server-rendered HTML over the engine, usable without
JavaScript.

Every page reads what the JSON API reads (the engine's views) and renders it through
Jinja with autoescape on, so payloads, metadata, reasons and search input are shown,
never interpreted. Each answer carries a Content-Security-Policy that allows nothing
but this coordinator's own stylesheet and forms. The one act, abandoning a branch, is
an operator's form POST with a CSRF token, and lands in the audit as the API's does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from pydantic import ValidationError

from coordinator.api._auth import PRINCIPAL
from coordinator.api._errors import DOMAIN_ERRORS
from coordinator.api._models import ResolveRequest
from coordinator.api._routes import STATE, _gtid
from coordinator.api._sessions import SESSION_COOKIE, SESSION_ID, SESSIONS
from coordinator.auth import Unauthenticated
from coordinator.engine import Coordinator, TxState
from coordinator.records import BranchRecord, TransactionRecord
from twopc_core.http import Handler, HttpError, code_for, domain_answer, invalid_body
from twopc_core.protocol import GTID_PATTERN

__all__ = ["PAGE_HEADERS", "page_errors", "setup_templates", "ui_routes"]

ui_routes = web.RouteTableDef()

#: Sent with every /ui answer: nothing from elsewhere, no framing, no sniffing, and no
#: gtid leaking through a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: Rows on one page of a listing.
PAGE_SIZE = 50
#: The unfinished page shows at most this many, oldest first.
UNFINISHED_SHOWN = 200
#: Seconds between automatic reloads of the pages that watch work move.
REFRESH_SECONDS = 5

_GTID = re.compile(GTID_PATTERN)
_STATES = [s.value for s in TxState]
#: What a branch's state tells of its vote ("" where it does not say).
_VOTES = {"prepared": "yes", "committed": "yes", "read_only": "read only", "failed": "no"}
_STYLESHEET = resources.files("coordinator.api").joinpath("static/admin.css").read_bytes()


# -- rendering --------------------------------------------------------------------------


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("coordinator.api", "templates"),
        autoescape=True,  # everything shown is escaped unless a template says otherwise
        undefined=jinja2.StrictUndefined,
        filters={"when": _when, "age": _age, "pretty": _pretty},
    )


def _render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    principal = request.get(PRINCIPAL)
    sessions = request.app[SESSIONS]
    base = {
        "principal": principal,
        "operator": principal is not None and principal.has("operator"),
        "signed_in": principal is not None and sessions.enabled,
        "csrf": sessions.csrf(request.get(SESSION_ID, "")),
        "refresh": None,
        "message": None,
        "section": "",
    }
    return aiohttp_jinja2.render_template(template, request, base | context, status=status)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers under /ui are HTML for a person, errors included, with PAGE_HEADERS; the
    JSON API's errors are left to the edge's middleware."""
    if not (request.path == "/ui" or request.path.startswith("/ui/")):
        return await handler(request)
    try:
        response = await handler(request)
    except HttpError as exc:
        response = _error_page(request, exc)
    except ValidationError as exc:
        response = _error_page(request, invalid_body(exc, what="the form"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_page(request, HttpError(exc.status, code_for(exc.status), exc.reason))
    except Exception as exc:
        known = domain_answer(DOMAIN_ERRORS, exc)
        if known is None:
            raise  # the edge logs it and answers 500
        response = _error_page(request, HttpError(known[0], known[1], str(exc)))
    response.headers.update(PAGE_HEADERS)
    return response


def _error_page(request: web.Request, error: HttpError) -> web.Response:
    if error.status == 401 and request.method == "GET":
        return _see_other("/ui/login")
    return _render(request, "error.html", {"error": error}, status=error.status)


def _coordinator(request: web.Request) -> Coordinator:
    return request.app[STATE].require()


async def _form(request: web.Request) -> dict[str, str]:
    return {key: value for key, value in (await request.post()).items() if isinstance(value, str)}


def _check_csrf(request: web.Request, form: dict[str, str]) -> None:
    if not request.app[SESSIONS].csrf_matches(request.get(SESSION_ID, ""), form.get("csrf", "")):
        raise HttpError(403, "csrf", "this form is stale or was not sent by this page: reload the page and try again")


# -- signing in and out ------------------------------------------------------------------


@ui_routes.get("/ui/login", name="ui_login_form")
async def _login_form(request: web.Request) -> web.Response:
    if not request.app[SESSIONS].enabled:
        return _see_other("/ui")
    return _render(request, "login.html", {})


@ui_routes.post("/ui/login", name="ui_login")
async def _login(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    if not sessions.enabled:
        return _see_other("/ui")
    token = (await _form(request)).get("token", "")
    try:
        principal = sessions.identify(token)
    except Unauthenticated:
        message = "That token is not one this coordinator accepts."
        return _render(request, "login.html", {"message": message}, status=401)
    if not principal.has("reader"):  # a client's token: every page would refuse it
        message = f"The token {principal.name!r} may not read the admin page: it needs the reader or operator role."
        return _render(request, "login.html", {"message": message}, status=403)
    response = _see_other("/ui")
    sessions.set_cookie(request, response, sessions.open(principal))
    return response


@ui_routes.post("/ui/logout", name="ui_logout")
async def _logout(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    session_id = request.cookies.get(SESSION_COOKIE, "")
    form = await _form(request)
    if not sessions.csrf_matches(session_id, form.get("csrf", "")):
        raise HttpError(403, "csrf", "this form is stale or was not sent by this page: reload the page and try again")
    sessions.close(session_id)
    response = _see_other("/ui/login")
    sessions.clear_cookie(response)
    return response


@ui_routes.get("/ui/static/admin.css", name="ui_stylesheet")
async def _stylesheet(request: web.Request) -> web.Response:
    return web.Response(body=_STYLESHEET, content_type="text/css", headers={"Cache-Control": "max-age=300"})


# -- pages ---------------------------------------------------------------------------------


@ui_routes.get("/ui", name="ui_overview")
async def _overview(request: web.Request) -> web.Response:
    coordinator = _coordinator(request)
    query = request.query.get("q", "").strip()
    if query:
        if _GTID.match(query):
            try:
                await coordinator.get(query)
            except LookupError:
                pass
            else:
                return _see_other(f"/ui/transactions/{query}")
        message = f"No transaction {query!r} was found."
        return _render(request, "overview.html", await _listing(request, coordinator) | {"message": message}, 404)
    return _render(request, "overview.html", await _listing(request, coordinator))


async def _listing(request: web.Request, coordinator: Coordinator) -> dict[str, Any]:
    state = request.query.get("state") or None
    if state is not None and state not in _STATES:
        raise HttpError(400, "invalid_parameter", f"state must be one of {_STATES}")
    after = request.query.get("after") or None
    if after is not None and not _GTID.match(after):
        raise HttpError(400, "invalid_parameter", "that page cursor is not one this page gave out")
    heuristic = request.query.get("heuristic") == "true" or None
    views = await coordinator.page(state, PAGE_SIZE, after, heuristic)
    return {
        "section": "overview",
        "views": views,
        "state": state or "",
        "states": _STATES,
        "heuristic": bool(heuristic),
        "after": after,
        "next_after": views[-1].record.gtid if len(views) == PAGE_SIZE else None,
        "query": request.query.get("q", ""),
        "active_count": coordinator.active_count,
        # Paging through history stays put; the first page follows what happens.
        "refresh": None if after else REFRESH_SECONDS * 2,
    }


@ui_routes.get("/ui/transactions/{gtid}", name="ui_transaction")
async def _transaction(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    coordinator = _coordinator(request)
    view = await coordinator.get(gtid)
    payloads = coordinator.payloads(gtid)
    branches = [
        {
            "record": b,
            "vote": _vote(b),
            "pending": b.name in view.pending,
            "has_payload": b.name in payloads,
            "payload": payloads.get(b.name),
        }
        for b in view.record.branches
    ]
    done = request.query.get("abandoned")
    message = f"Phase 2 to {done!r} was abandoned; the act is in the audit." if done else None
    context = {
        "section": "overview",
        "view": view,
        "record": view.record,
        "branches": branches,
        # Abandoning is for a decided transaction whose branch still waits for phase 2.
        "abandonable": view.record.decision is not None and bool(view.pending),
        "timeline": _timeline(view.record),
        "in_memory": bool(payloads),
        "message": message,
    }
    # A page that is still moving reloads itself, unless an operator may be typing a reason.
    moving = bool(view.pending) or view.record.decision is None
    context["refresh"] = (
        REFRESH_SECONDS if moving and not (context["abandonable"] and request[PRINCIPAL].has("operator")) else None
    )
    return _render(request, "transaction.html", context)


def _vote(branch: BranchRecord) -> str:
    """The branch's vote as kept, or as its state tells it (records from before votes were kept)."""
    vote = (branch.vote or _VOTES.get(branch.state, "")).replace("_", " ")
    return f"{vote} (early)" if branch.early and vote else vote


def _timeline(record: TransactionRecord) -> list[tuple[float, str]]:
    """What happened to the transaction, in order: its start, each vote, each phase-2
    acknowledgement, each operator's act, its deadline."""
    events = [(record.created_at, "began"), (record.deadline, "deadline")]
    for b in record.branches:
        if b.voted_at is not None and b.vote is not None:
            events.append((b.voted_at, f"{b.name} voted {b.vote.replace('_', ' ')}"))
        if b.acknowledged_at is not None:
            events.append((b.acknowledged_at, f"{b.name} acknowledged: {b.state}"))
        if b.resolved_at is not None:
            events.append((b.resolved_at, f"{b.resolved_by} abandoned phase 2 to {b.name}"))
    events.sort(key=lambda event: event[0])
    return [*events, (record.updated_at, f"last change ({record.state})")]


@ui_routes.post("/ui/transactions/{gtid}/abandon", name="ui_abandon")
async def _abandon(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    form = await _form(request)
    _check_csrf(request, form)
    body = ResolveRequest.model_validate(
        {"action": "abandon", "participant": form.get("participant", ""), "reason": form.get("reason", "").strip()}
    )
    coordinator = _coordinator(request)
    elsewhere = await coordinator.locate(gtid)
    if elsewhere is not None:
        raise HttpError(409, "held_elsewhere", f"another replica drives this transaction: open {elsewhere}/ui there")
    principal = request[PRINCIPAL]
    await coordinator.abandon(gtid, body.participant, principal.name, body.reason)
    return _see_other(f"/ui/transactions/{gtid}?abandoned={body.participant}")


@ui_routes.get("/ui/unfinished", name="ui_unfinished")
async def _unfinished(request: web.Request) -> web.Response:
    coordinator = _coordinator(request)
    views = coordinator.unfinished(UNFINISHED_SHOWN)
    health = {p.name: coordinator.participant_health(p.name) for p in coordinator.participant_settings}
    context = {
        "section": "unfinished",
        "views": views,
        "total": coordinator.active_count,
        "in_doubt": sum(len(v.in_doubt) for v in views),
        "health": health,
        "refresh": REFRESH_SECONDS,
    }
    return _render(request, "unfinished.html", context)


@ui_routes.get("/ui/participants", name="ui_participants")
async def _participants(request: web.Request) -> web.Response:
    coordinator = _coordinator(request)
    rows = [(p, coordinator.participant_health(p.name)) for p in coordinator.participant_settings]
    return _render(request, "participants.html", {"section": "participants", "rows": rows, "refresh": REFRESH_SECONDS})


@ui_routes.get("/ui/audit", name="ui_audit")
async def _audit(request: web.Request) -> web.Response:
    before_text = request.query.get("before") or None
    if before_text is not None and not (before_text.isdigit() and len(before_text) < 19):
        raise HttpError(400, "invalid_parameter", "that page cursor is not one this page gave out")
    before = int(before_text) if before_text else None
    acts = await _coordinator(request).audit(PAGE_SIZE, before)
    context = {
        "section": "audit",
        "acts": acts,
        "before": before,
        "next_before": acts[-1].id if len(acts) == PAGE_SIZE else None,
    }
    return _render(request, "audit.html", context)
