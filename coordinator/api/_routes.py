"""The REST API's handlers: thin translations between HTTP and the engine."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel

from coordinator.api._auth import check_transaction, principal_of
from coordinator.api._forward import Forwarder
from coordinator.api._models import (
    AuditList,
    AuditOut,
    BeginRequest,
    BeginResponse,
    ClusterView,
    EnlistRequest,
    ExecuteRequest,
    HealthResponse,
    ParticipantHealth,
    ParticipantsResponse,
    ParticipantView,
    ReplicaView,
    ResolveRequest,
    TransactionList,
    TransactionOut,
)
from coordinator.engine import Coordinator, Elsewhere, TxState
from twopc_core.http import HttpError
from twopc_core.metrics import metrics_response
from twopc_core.protocol import GTID_PATTERN

__all__ = ["STATE", "ServiceState", "routes"]


@dataclass
class ServiceState:
    """Set while the app starts; the handlers read the coordinator from here."""

    coordinator: Coordinator | None = None
    forwarder: Forwarder | None = None
    ready: bool = False

    def require(self) -> Coordinator:
        if self.coordinator is None or not self.ready:
            raise HttpError(503, "not_ready", "the coordinator is starting or stopping")
        return self.coordinator

    def forward(self, request: web.Request, replica_url: str) -> Awaitable[web.Response]:
        if self.forwarder is None:
            raise HttpError(503, "not_ready", "the coordinator is starting or stopping")
        return self.forwarder.forward(request, replica_url)


async def _elsewhere(request: web.Request, gtid: str) -> web.Response | None:
    """The answer of the replica that holds ``gtid``, if that is another one."""
    state = request.app[STATE]
    if Forwarder.forwarded(request):
        return None  # answered where it lands
    url = await state.require().locate(gtid)
    return None if url is None else await state.forward(request, url)


STATE = web.AppKey("state", ServiceState)

routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)

_GTID = re.compile(GTID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_STATES = {s.value for s in TxState}


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=model.__pydantic_serializer__.to_json(model),
        content_type="application/json",
        headers=headers,
    )


async def _body(request: web.Request, model: type[M], allow_empty: bool = False) -> tuple[M, bytes]:
    raw = await request.read()
    # Only a body of no bytes at all is absent; whitespace is a body, and not JSON.
    if not raw:
        if allow_empty:
            return model(), raw
        raise HttpError(400, "empty_body", "the request needs a JSON body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "invalid_json", "the body must be a JSON object")
    return model.model_validate(data), raw


def _gtid(request: web.Request) -> str:
    gtid = request.match_info["gtid"]
    if not _GTID.match(gtid):
        raise HttpError(404, "transaction_not_found", f"no transaction {gtid!r}: not a valid gtid")
    return gtid


def _idempotency(request: web.Request, raw: bytes) -> tuple[str | None, str | None]:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None, None
    if not _IDEMPOTENCY_KEY.match(key):
        raise HttpError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters")
    owner = principal_of(request).owner
    if owner is not None:
        # Each client's keys are its own: another's "order-17" is another transaction.
        key = f"{owner}:{key}"
    # The same key with another body is a client bug; remember what the body was.
    return key, hashlib.sha256(request.path.encode() + b"\n" + raw).hexdigest()


async def _check_access(request: web.Request, gtid: str, *, read: bool = False) -> None:
    """NotFound unless the caller may drive (or ``read``) ``gtid``."""
    principal = principal_of(request)
    if principal.anonymous or (read and principal.has("reader")):
        return
    owner, branches = await request.app[STATE].require().parties(gtid)
    check_transaction(principal, gtid, owner, branches, read=read)


def _wait_for_phase_two(request: web.Request) -> bool:
    wait = request.query.get("wait", "all")
    if wait not in ("all", "decision"):
        raise HttpError(400, "invalid_parameter", "wait must be 'all' or 'decision'", {"wait": wait})
    return wait == "all"


@routes.post("/v1/transactions", name="begin")
async def _begin(request: web.Request) -> web.Response:
    body, raw = await _body(request, BeginRequest, allow_empty=True)
    key, request_hash = _idempotency(request, raw)
    state = request.app[STATE]
    try:
        view, created = await state.require().begin(
            timeout_ms=body.timeout_ms,
            metadata=body.metadata,
            participants=[(p.name, p.payload, p.prepared) for p in body.participants or ()],
            idempotency_key=key,
            request_hash=request_hash,
            principal=principal_of(request).owner,
        )
    except Elsewhere as elsewhere:  # the key began a transaction another replica holds
        return await state.forward(request, elsewhere.url)
    out = TransactionOut.of(view)
    response = BeginResponse(gtid=out.gtid, state=out.state, deadline=out.deadline)
    return _json(response, 201 if created else 200, None if created else {"Idempotent-Replayed": "true"})


@routes.post("/v1/transactions:execute", name="execute")
async def _execute(request: web.Request) -> web.Response:
    body, raw = await _body(request, ExecuteRequest)
    key, request_hash = _idempotency(request, raw)
    state = request.app[STATE]
    try:
        view = await state.require().execute(
            participants=[(p.name, p.payload) for p in body.participants],
            timeout_ms=body.timeout_ms,
            metadata=body.metadata,
            idempotency_key=key,
            request_hash=request_hash,
            wait_for_phase_two=_wait_for_phase_two(request),
            principal=principal_of(request).owner,
        )
    except Elsewhere as elsewhere:  # the key began a transaction another replica holds
        return await state.forward(request, elsewhere.url)
    return _json(TransactionOut.of(view))


@routes.post("/v1/transactions/{gtid}/participants", name="enlist")
async def _enlist(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    body, _ = await _body(request, EnlistRequest)
    principal = principal_of(request)
    if principal.participant and body.name != principal.name:
        raise HttpError(403, "forbidden", f"participant {principal.name!r} may enlist only itself")
    if (answer := await _elsewhere(request, gtid)) is not None:
        return answer
    if not principal.participant:  # a participant joins transactions it is not in yet
        await _check_access(request, gtid)
    view = await request.app[STATE].require().enlist(gtid, body.name, body.payload, body.prepared)
    return _json(TransactionOut.of(view), 201)


@routes.post("/v1/transactions/{gtid}/commit", name="commit")
async def _commit(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    wait = _wait_for_phase_two(request)
    if (answer := await _elsewhere(request, gtid)) is not None:
        return answer
    await _check_access(request, gtid)
    view = await request.app[STATE].require().commit(gtid, wait_for_phase_two=wait)
    return _json(TransactionOut.of(view))


@routes.post("/v1/transactions/{gtid}/abort", name="abort")
async def _abort(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    if (answer := await _elsewhere(request, gtid)) is not None:
        return answer
    await _check_access(request, gtid)
    view = await request.app[STATE].require().abort(gtid)
    return _json(TransactionOut.of(view))


@routes.get("/v1/transactions/{gtid}", name="get_transaction")
async def _get_transaction(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    if (answer := await _elsewhere(request, gtid)) is not None:
        return answer
    view = await request.app[STATE].require().get(gtid)
    record = view.record
    check_transaction(
        principal_of(request), gtid, record.principal, frozenset(b.name for b in record.branches), read=True
    )
    return _json(TransactionOut.of(view))


@routes.get("/v1/transactions", name="list_transactions")
async def _list_transactions(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in _STATES:
        raise HttpError(400, "invalid_parameter", f"state must be one of {sorted(_STATES)}", {"state": state})
    limit = _limit(request)
    cursor = request.query.get("cursor")
    if cursor is not None and not _GTID.match(cursor):
        raise HttpError(400, "invalid_parameter", "cursor is not one this API gave out")
    heuristic = request.query.get("heuristic")
    if heuristic not in (None, "true", "false"):
        raise HttpError(400, "invalid_parameter", "heuristic must be 'true' or 'false'", {"heuristic": heuristic})
    views = (
        await request.app[STATE]
        .require()
        .page(state, limit, cursor, None if heuristic is None else heuristic == "true")
    )
    next_cursor = views[-1].record.gtid if len(views) == limit else None
    return _json(TransactionList(transactions=[TransactionOut.of(v) for v in views], next_cursor=next_cursor))


def _limit(request: web.Request) -> int:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise HttpError(400, "invalid_parameter", "limit must be a whole number from 1 to 1000")
    return limit


@routes.post("/v1/transactions/{gtid}/resolve", name="resolve")
async def _resolve(request: web.Request) -> web.Response:
    gtid = _gtid(request)
    body, _ = await _body(request, ResolveRequest)
    if (answer := await _elsewhere(request, gtid)) is not None:
        return answer
    # A participant gone for good may be gone from the configuration too: the branch is
    # what must exist, and the machine checks that.
    coordinator = request.app[STATE].require()
    view = await coordinator.abandon(gtid, body.participant, principal_of(request).name, body.reason)
    return _json(TransactionOut.of(view))


@routes.get("/v1/audit", name="audit")
async def _audit(request: web.Request) -> web.Response:
    limit = _limit(request)
    cursor = request.query.get("cursor")
    if cursor is not None and not (cursor.isdigit() and len(cursor) < 19):
        raise HttpError(400, "invalid_parameter", "cursor is not one this API gave out")
    acts = await request.app[STATE].require().audit(limit, int(cursor) if cursor else None)
    out = [
        AuditOut(
            id=a.id,
            at=_time(a.at),
            actor=a.actor,
            action=a.action,
            reason=a.reason,
            gtid=a.gtid,
            participant=a.participant,
            details=a.details,
        )
        for a in acts
    ]
    return _json(AuditList(acts=out, next_cursor=str(acts[-1].id) if len(acts) == limit else None))


@routes.get("/v1/participants", name="participants")
async def _participants(request: web.Request) -> web.Response:
    coordinator = request.app[STATE].require()
    views = []
    for p in coordinator.participant_settings:
        health = coordinator.participant_health(p.name)
        if health["checked_at"] is not None:
            health["checked_at"] = datetime.fromtimestamp(health["checked_at"], tz=UTC)
        views.append(ParticipantView(name=p.name, url=p.url, health=ParticipantHealth(**health)))
    return _json(ParticipantsResponse(participants=views))


@routes.get("/healthz", name="healthz")
async def _healthz(request: web.Request) -> web.Response:
    return _json(HealthResponse(status="ok"))


@routes.get("/readyz", name="readyz")
async def _readyz(request: web.Request) -> web.Response:
    coordinator = request.app[STATE].require()
    if not coordinator.ready:
        raise HttpError(503, "not_ready", "this replica holds no live lease on the log (or the log does not answer)")
    detail: dict[str, Any] = {"active_transactions": coordinator.active_count, "recovered": coordinator.recovered}
    return _json(HealthResponse(status="ready", detail=detail))


@routes.get("/v1/cluster", name="cluster")
async def _cluster(request: web.Request) -> web.Response:
    coordinator = request.app[STATE].require()
    membership = coordinator.membership
    if membership.shared:
        await membership.refresh()
    replicas = [
        ReplicaView(
            node_id=r.node_id,
            epoch=r.epoch,
            advertise_url=r.advertise_url,
            alive=r.alive,
            lease_expires_at=_time(r.lease_expires_at) if math.isfinite(r.lease_expires_at) else None,
            taken_over_by=r.taken_over_by,
            taken_over_at=_time(r.taken_over_at) if r.taken_over_at is not None else None,
            this=r.node_id == coordinator.node_id,
        )
        for r in sorted(
            membership.replicas.values() if membership.shared else [membership.me] if membership.me else [],
            key=lambda r: r.node_id,
        )
    ]
    view = ClusterView(
        node_id=coordinator.node_id,
        ready=coordinator.ready,
        shared_log=membership.shared,
        takeovers=membership.takeovers,
        replicas=replicas,
    )
    return _json(view)


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@routes.get("/metrics", name="metrics")
async def _metrics(request: web.Request) -> web.Response:
    coordinator = request.app[STATE].require()
    return metrics_response(coordinator.metrics.registry, request)
