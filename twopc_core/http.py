"""The HTTP edge, written once for every twopc service.

Every answer that is not a success has the body ``{"error": {"code", "message",
"details"}}``: ``code`` is for programs (stable, snake_case), ``message`` for people,
``details`` whatever helps (the fields that failed validation, the gtid). Anything a
client sends that a service cannot take is a 4xx naming the problem; only a fault of
the service itself is a 500, and even that is JSON without a trace.

A service raises :class:`HttpError` where it speaks HTTP, and its own domain errors
everywhere else; :func:`error_middleware` turns both into answers, the domain errors
through the service's table of which status and code each one means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import ValidationError

__all__ = [
    "CODES",
    "DomainErrors",
    "Handler",
    "HttpError",
    "Middleware",
    "code_for",
    "domain_answer",
    "error_body",
    "error_middleware",
    "error_response",
    "invalid_body",
    "json_response",
    "read_body",
    "validation_details",
]

log = structlog.get_logger(__name__)

#: The code of an error that has no code of its own, by status: the one table.
CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal",
    503: "not_ready",
}

#: What an aiohttp error's JSON answer keeps of its headers.
_KEPT_HEADERS = ("Allow",)

#: A service's domain errors, by class: the status and code each one is answered with.
#: The message is the exception's text; ``details`` its attribute of that name, if any.
DomainErrors = Mapping[type[BaseException], tuple[int, str]]


def code_for(status: int) -> str:
    return CODES.get(status, f"http_{status}")


class HttpError(Exception):
    """An answer other than success, raised where a service speaks HTTP."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None, details: Any = None) -> None:
        self.status = status
        self.code = code or code_for(status)
        self.message = message or self.code.replace("_", " ")
        self.details = details
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"HttpError({self.status}, {self.code!r}, {self.message!r})"

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request's body, refused 413 past ``max_bytes``: before reading any of it when
    its Content-Length says so (the application's ``client_max_size`` bounds the rest)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise HttpError(413, "body_too_large", f"the body is {declared} bytes; at most {max_bytes} are taken")
    body = await request.read()
    if len(body) > max_bytes:
        raise HttpError(413, "body_too_large", f"the body is over {max_bytes} bytes")
    return body


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    return json_response(error_body(code, message, details), status)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """What failed validation, one ``{"field", "problem"}`` per error, without the input."""
    return [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def error_middleware(domain_errors: DomainErrors | None = None, *, service: str = "the service") -> Middleware:
    """The middleware that makes every error of an application a JSON answer.

    ``domain_errors`` maps the service's own exceptions to a status and a code (a
    subclass is answered as its nearest listed ancestor). A body that fails a model's
    validation is a 422 naming the fields (a 400 if it is not JSON at all, see
    :func:`invalid_body`); aiohttp's own errors (404, 405, 413, ...) keep their status;
    anything else is logged and answered 500, naming ``service``.
    """
    table = dict(domain_errors or {})

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except ValidationError as exc:
            invalid = invalid_body(exc)
            return error_response(invalid.status, invalid.code, invalid.message, invalid.details)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            answer = error_response(exc.status, code_for(exc.status), exc.reason or code_for(exc.status))
            for name in _KEPT_HEADERS:  # a 405 says which methods the path takes
                if name in exc.headers:
                    answer.headers[name] = exc.headers[name]
            return answer
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # The client went away while its answer was being written: nobody to answer.
            log.info("client went away", path=request.path)
            raise
        except Exception as exc:
            known = domain_answer(table, exc)
            if known is not None:
                return error_response(known[0], known[1], str(exc), getattr(exc, "details", None))
            log.exception("internal error", path=request.path)
            return error_response(500, "internal", f"{service} failed to handle this request")

    return json_errors


def invalid_body(exc: ValidationError, *, what: str = "the request body", status: int = 422) -> HttpError:
    """The error for a body that failed a model's validation, to raise where a service
    parses it: 400 ``invalid_json`` when it is not JSON at all, else ``status``
    ``invalid_request`` with the first problems in the message and all in ``details``."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return HttpError(400, "invalid_json", f"{what} is not JSON")
    problems = validation_details(exc)
    summary = "; ".join(f"{problem['field']}: {problem['problem']}" for problem in problems[:5])
    return HttpError(status, "invalid_request", f"{what} is not valid: {summary}", problems)


def domain_answer(domain_errors: DomainErrors, exc: BaseException) -> tuple[int, str] | None:
    """The status and code ``domain_errors`` gives ``exc`` (or its nearest listed
    ancestor), for an error answered outside the middleware (one op of a batch)."""
    for cls in type(exc).__mro__:
        known = domain_errors.get(cls)
        if known is not None:
            return known
    return None
