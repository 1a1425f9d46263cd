"""Bad input gets a clear 4xx JSON error naming the problem; never a 500, never a hang."""

from __future__ import annotations

import pytest

from tests.coordinator.conftest import Harness


async def test_malformed_json_is_400_invalid_json(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", data=b'{"timeout_ms": ')
    assert status == 400
    assert body["error"]["code"] == "invalid_json"


async def test_a_whitespace_body_is_400_invalid_json_even_where_the_body_is_optional(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", data=b"\t")
    assert status == 400
    assert body["error"]["code"] == "invalid_json"


async def test_no_body_at_all_begins_with_the_defaults_where_the_body_is_optional(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", data=b"")
    assert status == 201 and body["state"] == "active"


async def test_a_json_array_body_is_400(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", data=b"[1, 2]")
    assert status == 400 and "object" in body["error"]["message"]


async def test_unknown_fields_are_422_naming_the_field(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"timeout": 5})
    assert status == 422
    assert body["error"]["details"][0]["field"] == "timeout"


async def test_wrong_types_are_422_naming_the_field(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"timeout_ms": "soon"})
    assert status == 422
    assert body["error"]["details"][0]["field"] == "timeout_ms"


async def test_an_unregistered_participant_is_422(harness: Harness) -> None:
    status, body = await harness.call(
        "POST", "/v1/transactions:execute", json={"participants": [{"name": "evil", "payload": 1}]}
    )
    assert status == 422 and body["error"]["code"] == "unknown_participant"


async def test_an_unknown_gtid_is_404(harness: Harness) -> None:
    for method, path in [
        ("GET", "/v1/transactions/c1-0000"),
        ("POST", "/v1/transactions/c1-0000/commit"),
        ("POST", "/v1/transactions/c1-0000/abort"),
    ]:
        status, body = await harness.call(method, path)
        assert status == 404, path
        assert body["error"]["code"] == "transaction_not_found"


async def test_a_gtid_that_is_not_url_safe_is_404(harness: Harness) -> None:
    status, body = await harness.call("GET", "/v1/transactions/" + "x" * 65)
    assert status == 404 and "not a valid gtid" in body["error"]["message"]


async def test_commit_after_abort_is_409(harness: Harness) -> None:
    _, begun = await harness.call("POST", "/v1/transactions", json={})
    gtid = begun["gtid"]
    await harness.call("POST", f"/v1/transactions/{gtid}/abort")
    status, body = await harness.call("POST", f"/v1/transactions/{gtid}/commit")
    assert status == 409 and body["error"]["code"] == "wrong_state"


async def test_abort_after_commit_is_409(harness: Harness) -> None:
    _, body = await harness.call(
        "POST", "/v1/transactions:execute", json={"participants": [{"name": "p1"}, {"name": "p2"}]}
    )
    status, err = await harness.call("POST", f"/v1/transactions/{body['gtid']}/abort")
    assert status == 409 and err["error"]["code"] == "wrong_state"


async def test_enlisting_the_same_name_with_another_payload_is_409(harness: Harness) -> None:
    _, begun = await harness.call("POST", "/v1/transactions", json={})
    path = f"/v1/transactions/{begun['gtid']}/participants"
    assert (await harness.call("POST", path, json={"name": "p1", "payload": 1}))[0] == 201
    assert (await harness.call("POST", path, json={"name": "p1", "payload": 1}))[0] == 201
    status, body = await harness.call("POST", path, json={"name": "p1", "payload": 2})
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_an_idempotency_key_reused_for_another_body_is_422(harness: Harness) -> None:
    headers = {"Idempotency-Key": "k"}
    await harness.call("POST", "/v1/transactions", json={"timeout_ms": 1000}, headers=headers)
    status, body = await harness.call("POST", "/v1/transactions", json={"timeout_ms": 2000}, headers=headers)
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"


async def test_a_body_over_the_limit_is_413(harness: Harness) -> None:
    status, body = await harness.call("POST", "/v1/transactions", json={"metadata": {"x": "y" * 10_000}})
    assert status == 413 and body["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("query", ["state=nonsense", "limit=0", "limit=abc", "cursor=%20"])
async def test_bad_list_parameters_are_400(harness: Harness, query: str) -> None:
    status, body = await harness.call("GET", f"/v1/transactions?{query}")
    assert status == 400 and body["error"]["code"] == "invalid_parameter"


async def test_a_bad_wait_parameter_is_400(harness: Harness) -> None:
    _, begun = await harness.call("POST", "/v1/transactions", json={})
    status, _ = await harness.call("POST", f"/v1/transactions/{begun['gtid']}/commit?wait=forever")
    assert status == 400


async def test_unknown_routes_and_methods_answer_json(harness: Harness) -> None:
    assert (await harness.call("GET", "/v2/nothing"))[0] == 404
    assert (await harness.call("DELETE", "/v1/transactions"))[0] == 405


async def test_openapi_document_names_every_route(harness: Harness) -> None:
    status, doc = await harness.call("GET", "/openapi.json")
    assert status == 200
    assert {
        "/v1/transactions",
        "/v1/transactions:execute",
        "/v1/transactions/{gtid}/commit",
        "/v1/transactions/{gtid}/resolve",
        "/v1/audit",
    } <= set(doc["paths"])
    assert "TransactionOut" in doc["components"]["schemas"]
