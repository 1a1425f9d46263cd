"""Who may call what: bearer tokens and roles, and participants' signed calls."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from coordinator.api import build_app
from coordinator.api._auth import ACCESS
from coordinator.config import Settings
from tests.coordinator.conftest import SECRET, TOKENS, Harness, bearer
from twopc_core.signing import signed_request_headers

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]

#: Every endpoint behind a role, and the roles that may call it. ``{gtid}`` is a
#: transaction the caller began itself (or, for a caller who may begin none, one
#: begun by another token).
ENDPOINTS: list[tuple[str, str, Any, set[str]]] = [
    ("POST", "/v1/transactions", {}, {"client"}),
    ("POST", "/v1/transactions:execute", {"participants": TWO}, {"client"}),
    ("POST", "/v1/transactions/{gtid}/participants", {"name": "p1"}, {"client"}),
    ("POST", "/v1/transactions/{gtid}/commit", None, {"client"}),
    ("POST", "/v1/transactions/{gtid}/abort", None, {"client"}),
    ("GET", "/v1/transactions/{gtid}", None, {"client", "reader", "operator"}),
    ("GET", "/v1/transactions", None, {"reader", "operator"}),
    ("GET", "/v1/participants", None, {"reader", "operator"}),
    ("GET", "/v1/cluster", None, {"reader", "operator"}),
    ("GET", "/metrics", None, {"reader", "operator"}),
]
ROLE_TOKENS = {"client": "client-a", "reader": "reader", "operator": "operator"}


async def _begun_by(harness: Harness, token: str) -> str:
    status, body = await harness.call("POST", "/v1/transactions", json={}, headers=bearer(token))
    assert status == 201, body
    return str(body["gtid"])


async def _call(harness: Harness, method: str, path: str, body: Any, headers: dict[str, str]) -> int:
    response = await harness.client.request(method, path, json=body, headers=headers)
    await response.read()
    return response.status


async def _bare(
    harness: Harness, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, Any, Any]:
    """A call with only ``headers``: none of the harness's own (its token)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, harness.client.make_url(path), data=body, headers=headers) as response:
            return response.status, orjson.loads(await response.read()), response.headers


@pytest.mark.parametrize("role", sorted(ROLE_TOKENS))
@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
async def test_each_role_may_call_what_its_table_row_allows(
    harness: Harness, role: str, method: str, path: str, body: Any, allowed: set[str]
) -> None:
    token = ROLE_TOKENS[role]
    if "{gtid}" in path:
        gtid = await _begun_by(harness, token if role == "client" else "client-b")
        path = path.format(gtid=gtid)
    status = await _call(harness, method, path, body, bearer(token))
    if role in allowed:
        assert status < 400, f"{role} was refused {method} {path}: {status}"
    else:
        assert status == 403, f"{role} got {status} for {method} {path}"


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer twopc_not-a-token-anyone-has", "Basic dGVzdGVyOnRlc3Rlcg==", "Bearer ", TOKENS["tester"]],
    ids=["missing", "unknown", "basic", "empty", "no-scheme"],
)
async def test_a_call_without_a_valid_token_is_401_json_and_says_bearer(
    harness: Harness, method: str, path: str, body: Any, allowed: set[str], authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    path = path.format(gtid="c1-0000000000000-000000")
    status, payload, answered = await _bare(harness, method, path, headers, orjson.dumps(body))
    assert status == 401
    assert payload["error"]["code"] == ("unauthorized" if authorization is None else "invalid_token")
    assert answered["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_health_and_the_api_document_need_no_token(harness: Harness, path: str) -> None:
    status, _, _ = await _bare(harness, "GET", path, {})
    assert status == 200


async def test_a_client_cannot_see_or_drive_another_clients_transaction(harness: Harness) -> None:
    gtid = await _begun_by(harness, "client-a")
    for method, path, body in [
        ("GET", f"/v1/transactions/{gtid}", None),
        ("POST", f"/v1/transactions/{gtid}/participants", {"name": "p1"}),
        ("POST", f"/v1/transactions/{gtid}/commit", None),
        ("POST", f"/v1/transactions/{gtid}/abort", None),
    ]:
        status, answer = await harness.call(method, path, json=body, headers=bearer("client-b"))
        # As if it did not exist: whether it does is not client-b's to know.
        assert (status, answer["error"]["code"]) == (404, "transaction_not_found"), (method, path)
    status, answer = await harness.call("GET", f"/v1/transactions/{gtid}", headers=bearer("client-a"))
    assert (status, answer["state"], answer["begun_by"]) == (200, "active", "client-a")


async def test_the_same_idempotency_key_of_two_clients_begins_two_transactions(harness: Harness) -> None:
    key = {"Idempotency-Key": "order-17"}
    gtids = []
    for token in ("client-a", "client-b", "client-a"):
        status, body = await harness.call("POST", "/v1/transactions", json={}, headers=bearer(token) | key)
        assert status in (200, 201)
        gtids.append(body["gtid"])
    assert gtids[0] != gtids[1]
    assert gtids[0] == gtids[2]


async def test_a_reader_sees_every_transaction_but_drives_none(harness: Harness) -> None:
    gtid = await _begun_by(harness, "client-a")
    status, body = await harness.call("GET", f"/v1/transactions/{gtid}", headers=bearer("reader"))
    assert status == 200 and body["gtid"] == gtid
    status, body = await harness.call("GET", "/v1/transactions", headers=bearer("reader"))
    assert status == 200 and gtid in [t["gtid"] for t in body["transactions"]]
    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/abort", headers=bearer("reader"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert body["error"]["details"] == {"needs": ["client"], "has": ["reader"]}


def test_every_route_has_an_access_rule(tmp_path: Any) -> None:
    app = build_app(Settings(log={"path": tmp_path / "c.db"}))
    names = {route.name for route in app.router.routes()}
    assert None not in names, "a route without a name has no access rule"
    assert names <= set(ACCESS), f"routes without a rule: {sorted(names - set(ACCESS))}"


# -- participants' own calls ----------------------------------------------------------


def _signed(participant: str, method: str, path: str, body: bytes = b"", secret: str = SECRET) -> dict[str, str]:
    return signed_request_headers(participant, secret, method, path, body)


async def _raw(harness: Harness, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, Any]:
    # No bearer token: the signature alone says who calls.
    status, answer, _ = await _bare(harness, method, path, headers, body)
    return status, answer


async def test_a_participant_reads_a_transaction_it_has_a_branch_in_by_signing_its_call(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    path = f"/v1/transactions/{body['gtid']}"
    status, answer = await _raw(harness, "GET", path, _signed("p1", "GET", path))
    assert status == 200 and answer["gtid"] == body["gtid"]


async def test_a_participant_asking_about_a_transaction_it_is_not_in_hears_it_does_not_exist(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    path = f"/v1/transactions/{body['gtid']}"
    status, answer = await _raw(harness, "GET", path, _signed("p2", "GET", path))
    assert (status, answer["error"]["code"]) == (404, "transaction_not_found")


async def test_a_replayed_participant_call_is_refused(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    path = f"/v1/transactions/{body['gtid']}"
    headers = _signed("p1", "GET", path)
    assert (await _raw(harness, "GET", path, headers))[0] == 200
    status, answer = await _raw(harness, "GET", path, headers)
    assert (status, answer["error"]["code"]) == (401, "invalid_signature")
    assert "replay" in answer["error"]["message"]


@pytest.mark.parametrize(
    "tamper",
    ["unsigned", "wrong-secret", "unknown-participant", "other-path", "stale"],
)
async def test_a_participant_call_that_is_not_validly_signed_is_401(harness: Harness, tamper: str) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"participants": [{"name": "p1"}]})
    path = f"/v1/transactions/{body['gtid']}"
    headers = {
        "unsigned": {"X-Twopc-Participant": "p1"},
        "wrong-secret": _signed("p1", "GET", path, secret="not-the-secret"),
        "unknown-participant": _signed("p9", "GET", path),
        "other-path": _signed("p1", "GET", "/v1/transactions"),
        "stale": signed_request_headers("p1", SECRET, "GET", path, b"", now=1.0),
    }[tamper]
    status, answer = await _raw(harness, "GET", path, headers)
    assert (status, answer["error"]["code"]) == (401, "invalid_signature")


async def test_a_participant_enlists_itself_early_but_no_other(harness: Harness) -> None:
    gtid = await _begun_by(harness, "client-a")
    path = f"/v1/transactions/{gtid}/participants"
    for name, expected in (("p2", 403), ("p1", 201)):
        raw = orjson.dumps({"name": name, "prepared": True})
        headers = _signed("p1", "POST", path, raw) | {"Content-Type": "application/json"}
        status, _ = await _raw(harness, "POST", path, headers, raw)
        assert status == expected, name
    status, view = await harness.call("GET", f"/v1/transactions/{gtid}", headers=bearer("client-a"))
    assert [(b["name"], b["early"]) for b in view["branches"]] == [("p1", True)]


async def test_a_participant_may_not_begin_or_list(harness: Harness) -> None:
    for method, path in (("POST", "/v1/transactions"), ("GET", "/v1/transactions")):
        status, answer = await _raw(harness, method, path, _signed("p1", method, path))
        assert (status, answer["error"]["code"]) == (403, "forbidden"), path


# -- what the API document says of it ------------------------------------------------------


async def test_the_document_says_which_operations_need_which_credentials(harness: Harness) -> None:
    status, doc = await harness.call("GET", "/openapi.json")
    assert status == 200
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    operations = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    # One rule, one documented operation; the admin page's HTML is no part of the API.
    assert set(operations) == {name for name, rule in ACCESS.items() if not rule.page} - {"openapi"}
    assert not [path for path in doc["paths"] if path.startswith("/ui")]
    for route, op in operations.items():
        rule = ACCESS[route]
        if rule.public:
            assert op["security"] == [] and "401" not in op["responses"], route
        else:
            assert {"401", "403"} <= set(op["responses"]), route
            assert op["x-twopc-roles"] == sorted(rule.roles), route
            assert ({"participant": []} in op["security"]) == rule.participants, route


async def test_the_document_names_only_registered_participants_for_an_enlistment(harness: Harness) -> None:
    _, doc = await harness.call("GET", "/openapi.json")
    assert doc["components"]["schemas"]["ExecuteParticipant"]["properties"]["name"]["enum"] == ["p1", "p2"]


async def test_a_405_names_the_methods_the_path_takes(harness: Harness) -> None:
    response = await harness.client.request("DELETE", "/v1/transactions")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


async def test_refused_calls_are_warned_of_with_their_reason_once_per_interval(harness: Harness) -> None:
    with capture_logs() as logs:
        for _ in range(3):
            response = await harness.client.get("/v1/transactions", headers={"Authorization": "Bearer not-a-token"})
            assert response.status == 401
    (line,) = [line for line in logs if line["event"] == "refused a call"]
    assert line["log_level"] == "warning"
    assert line["code"] == "invalid_token" and "not one this coordinator accepts" in line["reason"]
    assert line["path"] == "/v1/transactions"
