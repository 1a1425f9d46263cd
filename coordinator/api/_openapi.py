"""The OpenAPI document, generated from the API's pydantic models and its access table.

Who may call an operation comes from :data:`coordinator.api._auth.ACCESS`, the table
the server enforces: an open route needs no credentials, every other one a bearer
token (or, where participants may call it, their signature) and answers 401 and 403.
Parameters carry the bounds the server checks, so a generated client is refused
nothing it was told it may send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from coordinator.api._auth import ACCESS
from coordinator.api._models import (
    AuditList,
    BeginRequest,
    BeginResponse,
    ClusterView,
    EnlistRequest,
    ErrorResponse,
    ExecuteRequest,
    HealthResponse,
    ParticipantsResponse,
    ResolveRequest,
    TransactionList,
    TransactionOut,
)
from twopc_core import __version__
from twopc_core.protocol import GTID_PATTERN
from twopc_core.signing import NONCE_HEADER, PARTICIPANT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"

#: Every error any call may meet, whatever its input: a body too large, a replica not
#: ready (starting, taken over, its log unreachable).
_ALWAYS = ("413", "503")
_DESCRIPTIONS = {
    "400": "malformed JSON or parameters",
    "401": "no valid credentials (see WWW-Authenticate)",
    "403": "the token's roles do not allow this call",
    "404": "no such transaction (or not one this caller may see)",
    "409": "the transaction's state does not allow it",
    "413": "the body is larger than server.max_body_bytes",
    "422": "a body that does not validate",
    "503": "this replica cannot answer now; retry, or ask another",
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _op(
    route: str,
    summary: str,
    ok: type[BaseModel] | None,
    status: str = "200",
    body: type[BaseModel] | None = None,
    errors: tuple[str, ...] = ("400", "404", "409", "422"),
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    access = ACCESS[route]
    codes = set(errors) | set(_ALWAYS)
    if not access.public:
        codes |= {"401", "403"}
    if body is not None:
        codes |= {"400", "422"}
    success: dict[str, Any] = {"description": "success"}
    if ok is not None:
        success["content"] = _content(ok)
    else:
        success["content"] = {"text/plain": {"schema": {"type": "string"}}}
    replayed: dict[str, Any] = {}
    if route == "begin":  # an Idempotency-Key seen before answers the first transaction again
        replayed = {
            "200": {
                "description": "the Idempotency-Key began this transaction before",
                "headers": {"Idempotent-Replayed": {"schema": {"enum": ["true"]}}},
                "content": _content(ok) if ok is not None else {},
            }
        }
    op: dict[str, Any] = {
        "operationId": route,
        "summary": summary,
        "responses": {status: success}
        | replayed
        | {
            code: {"description": _DESCRIPTIONS[code], "content": _content(ErrorResponse)}
            | ({"headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}} if code == "401" else {})
            for code in sorted(codes)
        },
    }
    if access.public:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}] + ([{"participant": []}] if access.participants else [])
        op["x-twopc-roles"] = sorted(access.roles)
    if body is not None:
        # A begin may come without a body: every field of it has a default.
        op["requestBody"] = {"required": route != "begin", "content": _content(body)}
    if params:
        op["parameters"] = params
    return op


_GTID = {"name": "gtid", "in": "path", "required": True, "schema": {"type": "string", "pattern": GTID_PATTERN}}
_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "the same key (of this client's) with the same body is the same transaction",
    "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
}
_WAIT = {"name": "wait", "in": "query", "required": False, "schema": {"enum": ["all", "decision"]}}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
_STATES = ["active", "preparing", "committing", "committed", "aborting", "aborted"]


def openapi_document(participants: Sequence[str] = ()) -> dict[str, Any]:
    """The document; ``participants``: the registered names, which are then the only
    names an enlistment may carry (an unknown one is a 422)."""
    models: list[type[BaseModel]] = [
        AuditList,
        ClusterView,
        BeginRequest,
        BeginResponse,
        EnlistRequest,
        ErrorResponse,
        ExecuteRequest,
        HealthResponse,
        ParticipantsResponse,
        ResolveRequest,
        TransactionList,
        TransactionOut,
    ]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    if participants:
        for name in ("Enlistment", "EnlistRequest", "ExecuteParticipant"):
            schemas[name]["properties"]["name"]["enum"] = sorted(participants)
    return {
        "openapi": "3.1.0",
        "info": {"title": "twopc coordinator", "version": __version__},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/transactions": {
                "post": _op("begin", "Begin a transaction", BeginResponse, "201", BeginRequest, params=[_KEY]),
                "get": _op(
                    "list_transactions",
                    "List transactions, oldest first (reader)",
                    TransactionList,
                    errors=("400",),
                    params=[
                        {"name": "state", "in": "query", "schema": {"enum": _STATES}},
                        _LIMIT,
                        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": GTID_PATTERN}},
                        {"name": "heuristic", "in": "query", "schema": {"enum": ["true", "false"]}},
                    ],
                ),
            },
            "/v1/transactions:execute": {
                "post": _op(
                    "execute",
                    "Begin, enlist and commit in one call",
                    TransactionOut,
                    body=ExecuteRequest,
                    params=[_KEY, _WAIT],
                )
            },
            "/v1/transactions/{gtid}": {
                "get": _op("get_transaction", "A transaction's state", TransactionOut, errors=("404",), params=[_GTID])
            },
            "/v1/transactions/{gtid}/participants": {
                "post": _op("enlist", "Enlist a participant", TransactionOut, "201", EnlistRequest, params=[_GTID])
            },
            "/v1/transactions/{gtid}/commit": {
                "post": _op("commit", "Commit: run both phases", TransactionOut, params=[_GTID, _WAIT])
            },
            "/v1/transactions/{gtid}/abort": {"post": _op("abort", "Abort", TransactionOut, params=[_GTID])},
            "/v1/transactions/{gtid}/resolve": {
                "post": _op(
                    "resolve",
                    "Operator: abandon phase 2 to a participant gone for good (the decision stands)",
                    TransactionOut,
                    body=ResolveRequest,
                    params=[_GTID],
                )
            },
            "/v1/audit": {
                "get": _op(
                    "audit",
                    "Operators' acts, newest first",
                    AuditList,
                    errors=("400",),
                    params=[
                        _LIMIT,
                        {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"}},
                    ],
                )
            },
            "/v1/participants": {
                "get": _op("participants", "Registered participants", ParticipantsResponse, errors=())
            },
            "/v1/cluster": {
                "get": _op(
                    "cluster", "The replicas: their epochs and leases, who took over whom", ClusterView, errors=()
                )
            },
            "/healthz": {"get": _op("healthz", "Liveness", HealthResponse, errors=())},
            "/readyz": {"get": _op("readyz", "Readiness: recovery scheduled", HealthResponse, errors=())},
            "/metrics": {"get": _op("metrics", "Prometheus metrics", None, errors=())},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from [[auth.tokens]] (`twopc token new`); its roles say what it may call",
                },
                "participant": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": (
                        f"a registered participant's own call, signed with its shared secret: {PARTICIPANT_HEADER},"
                        f" {NONCE_HEADER}, {TIMESTAMP_HEADER} and this HMAC (see twopc_core.signing)"
                    ),
                },
            },
        },
    }
