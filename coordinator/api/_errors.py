"""JSON errors: ``{"error": {"code", "message", "details"}}`` with the right status.

Anything a client sends that the API cannot take is a 4xx naming the problem; only a
fault of the coordinator itself is a 500, and even that is JSON without a trace.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from coordinator.engine import Conflict, WrongState
from coordinator.engine._driver import IdempotencyMismatch, NotFound, UnknownParticipantError

__all__ = ["ApiError", "error_middleware", "error_response", "validation_details"]

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except ValidationError as exc:
        return error_response(422, "invalid_request", "the request body is not valid", validation_details(exc))
    except NotFound as exc:
        return error_response(404, "transaction_not_found", f"no transaction {exc.args[0]!r}")
    except UnknownParticipantError as exc:
        return error_response(422, "unknown_participant", str(exc))
    except IdempotencyMismatch as exc:
        return error_response(422, "idempotency_key_reused", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except WrongState as exc:
        return error_response(409, "wrong_state", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        return error_response(exc.status, code, exc.reason or code)
    except Exception:
        log.exception("internal error", path=request.path)
        return error_response(500, "internal", "the coordinator failed to handle this request")
