"""The HTTP edge every service shares: one error body, one code table, one middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from pydantic import BaseModel, ConfigDict
from structlog.testing import capture_logs

from twopc_core.http import CODES, HttpError, error_body, error_middleware


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int


class Missing(LookupError):
    details: ClassVar[dict[str, str]] = {"what": "thing"}


class GoneForGood(Missing):
    pass


async def raise_http(_: web.Request) -> web.Response:
    raise HttpError(409, "wrong_state", "not now", {"state": "aborted"})


async def raise_domain(_: web.Request) -> web.Response:
    raise GoneForGood("no such thing")


async def validate(request: web.Request) -> web.Response:
    Thing.model_validate_json(await request.read())
    return web.json_response({})


async def crash(_: web.Request) -> web.Response:
    raise RuntimeError("secret internals")


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[error_middleware({Missing: (404, "thing_not_found")}, service="the test")])
    app.router.add_get("/http", raise_http)
    app.router.add_get("/domain", raise_domain)
    app.router.add_post("/validate", validate)
    app.router.add_get("/crash", crash)
    app.router.add_post("/only-post", validate)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def answer(client: TestClient, method: str, path: str, data: bytes | None = None) -> tuple[int, Any]:
    response = await client.request(method, path, data=data)
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def test_an_http_error_is_answered_with_its_status_code_and_details(client: TestClient) -> None:
    assert await answer(client, "GET", "/http") == (409, error_body("wrong_state", "not now", {"state": "aborted"}))


async def test_a_domain_error_is_answered_as_its_nearest_listed_ancestor(client: TestClient) -> None:
    status, body = await answer(client, "GET", "/domain")
    assert status == 404
    assert body == error_body("thing_not_found", "no such thing", {"what": "thing"})


async def test_a_body_that_fails_validation_is_a_422_naming_the_field(client: TestClient) -> None:
    status, body = await answer(client, "POST", "/validate", data=b'{"size": "big"}')
    assert status == 422
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"][0]["field"] == "size"


async def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    status, body = await answer(client, "POST", "/validate", data=b"{nope")
    assert status == 400 and body["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nowhere", 404), ("GET", "/only-post", 405)])
async def test_aiohttp_errors_keep_their_status_with_the_code_of_the_table(
    client: TestClient, method: str, path: str, status: int
) -> None:
    answered, body = await answer(client, method, path)
    assert answered == status and body["error"]["code"] == CODES[status]


async def test_a_405_names_the_methods_the_path_takes_in_allow(client: TestClient) -> None:
    response = await client.get("/only-post")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"POST"}
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_failure_is_a_500_that_shows_no_internals(client: TestClient) -> None:
    status, body = await answer(client, "GET", "/crash")
    assert status == 500
    assert body == error_body("internal", "the test failed to handle this request")


def test_an_http_error_without_a_code_takes_the_code_of_its_status() -> None:
    error = HttpError(413)
    assert (error.code, error.body()["error"]["code"]) == ("body_too_large", "body_too_large")


def test_the_table_has_one_code_per_status() -> None:
    assert len(set(CODES.values())) == len(CODES)


async def test_a_client_that_went_away_is_no_internal_error() -> None:
    async def gone(_: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Cannot write to closing transport")

    middleware = error_middleware(service="the test")
    with capture_logs() as logs, pytest.raises(ConnectionResetError):
        await middleware(make_mocked_request("GET", "/stream"), gone)
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [("client went away", "info")]
