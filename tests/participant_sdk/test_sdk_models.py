"""The client's models of the coordinator's answers name the fields the coordinator's
OpenAPI document describes: the SDK keeps its own copy (it does not import the
coordinator), and this is what keeps the two in step."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from coordinator.api import openapi_document
from participant_sdk.models import AuditAct, AuditPage, Began, Branch, Cluster, Replica, Transaction, TransactionPage

#: Each client model and the schema of the document it stands for.
MODELS: dict[type[BaseModel], str] = {
    Transaction: "TransactionOut",
    Branch: "BranchView",
    TransactionPage: "TransactionList",
    AuditPage: "AuditList",
    AuditAct: "AuditOut",
    Cluster: "ClusterView",
    Replica: "ReplicaView",
    Began: "BeginResponse",
}

#: What the client adds to an answer, from its headers rather than its body.
FROM_HEADERS = {Began: {"replayed"}}


def _schemas() -> dict[str, dict[str, object]]:
    document = openapi_document()
    return document["components"]["schemas"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", list(MODELS), ids=lambda model: model.__name__)
def test_the_model_has_the_fields_of_the_coordinators_schema(model: type[BaseModel]) -> None:
    schema = _schemas()[MODELS[model]]
    documented = set(schema["properties"])  # type: ignore[call-overload]

    assert set(model.model_fields) - FROM_HEADERS.get(model, set()) == documented


def test_the_coordinators_required_fields_are_typed_by_the_client_too() -> None:
    # A field the document requires that the client would drop or rename fails above;
    # here: every required one is at least known to the client's model.
    for model, name in MODELS.items():
        required = set(_schemas()[name].get("required", []))  # type: ignore[attr-defined]
        assert required <= set(model.model_fields), model.__name__
