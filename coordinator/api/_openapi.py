"""The OpenAPI document, generated from the API's pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from coordinator.api._models import (
    BeginRequest,
    BeginResponse,
    ClusterView,
    EnlistRequest,
    ErrorResponse,
    ExecuteRequest,
    HealthResponse,
    ParticipantsResponse,
    TransactionList,
    TransactionOut,
)
from twopc_core import __version__

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _op(
    summary: str,
    ok: type[BaseModel],
    status: str = "200",
    body: type[BaseModel] | None = None,
    errors: tuple[str, ...] = ("400", "404", "409", "422"),
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {status: {"description": "success", "content": _content(ok)}}
        | {code: {"description": "error", "content": _content(ErrorResponse)} for code in errors},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _content(body)}
    if params:
        op["parameters"] = params
    return op


_GTID = {"name": "gtid", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
_WAIT = {"name": "wait", "in": "query", "required": False, "schema": {"enum": ["all", "decision"]}}


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ClusterView,
        BeginRequest,
        BeginResponse,
        EnlistRequest,
        ErrorResponse,
        ExecuteRequest,
        HealthResponse,
        ParticipantsResponse,
        TransactionList,
        TransactionOut,
    ]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "twopc coordinator", "version": __version__},
        "paths": {
            "/v1/transactions": {
                "post": _op("Begin a transaction", BeginResponse, "201", BeginRequest, params=[_KEY]),
                "get": _op(
                    "List transactions",
                    TransactionList,
                    errors=("400",),
                    params=[
                        {"name": "state", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                ),
            },
            "/v1/transactions:execute": {
                "post": _op(
                    "Begin, enlist and commit in one call", TransactionOut, body=ExecuteRequest, params=[_KEY, _WAIT]
                )
            },
            "/v1/transactions/{gtid}": {"get": _op("A transaction's state", TransactionOut, params=[_GTID])},
            "/v1/transactions/{gtid}/participants": {
                "post": _op("Enlist a participant", TransactionOut, "201", EnlistRequest, params=[_GTID])
            },
            "/v1/transactions/{gtid}/commit": {
                "post": _op("Commit: run both phases", TransactionOut, params=[_GTID, _WAIT])
            },
            "/v1/transactions/{gtid}/abort": {"post": _op("Abort", TransactionOut, params=[_GTID])},
            "/v1/participants": {"get": _op("Registered participants", ParticipantsResponse, errors=())},
            "/v1/cluster": {
                "get": _op("The replicas: their epochs and leases, who took over whom", ClusterView, errors=())
            },
            "/healthz": {"get": _op("Liveness", HealthResponse, errors=())},
            "/readyz": {"get": _op("Readiness: recovery scheduled", HealthResponse, errors=("503",))},
        },
        "components": {"schemas": schemas},
    }
