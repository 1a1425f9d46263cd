"""``GET /metrics``: prometheus_client's exposition of the coordinator's figures."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.coordinator.conftest import Harness, bearer, running_harness
from twopc_core.metrics import totals
from twopc_core.testing import wait_until

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]


async def scraped(harness: Harness) -> str:
    response = await harness.client.get("/metrics", headers=bearer("reader"))
    assert response.status == 200
    return await response.text()


async def test_a_commit_and_an_abort_are_counted_by_outcome(harness: Harness) -> None:
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    harness.participants["p2"].vote = "no"
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    families = {f.name: f for f in text_string_to_metric_families(await scraped(harness))}
    by_outcome = {s.labels["outcome"]: s.value for s in families["twopc_transactions"].samples}
    assert by_outcome == {"committed": 1.0, "aborted": 1.0}
    assert families["twopc_commit_duration_seconds"].type == "histogram"


async def test_exchange_histograms_are_labelled_by_participant_and_operation(harness: Harness) -> None:
    await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    families = {f.name: f for f in text_string_to_metric_families(await scraped(harness))}
    counted = {
        (s.labels["participant"], s.labels["operation"])
        for s in families["twopc_participant_exchange_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert {("p1", "prepare"), ("p2", "prepare"), ("p1", "commit"), ("p2", "commit")} <= counted


async def test_a_branch_that_never_acknowledges_keeps_its_transaction_in_doubt(harness: Harness) -> None:
    harness.participants["p2"].mode = "hang_commit"
    _, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert body["outcome"] == "committed" and body["state"] != "committed"

    async def in_doubt() -> bool:
        figures = totals(await scraped(harness))
        return figures["twopc_in_doubt_transactions"] == 1 and figures["twopc_unfinished_transactions"] == 1

    await wait_until(in_doubt, timeout=5)
    assert totals(await scraped(harness))["twopc_oldest_in_doubt_age_seconds"] > 0


async def test_switched_off_the_histograms_go_and_the_counts_stay(tmp_path: Path) -> None:
    async with running_harness(tmp_path, metrics={"enabled": False}) as harness:
        await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
        families = {f.name: f for f in text_string_to_metric_families(await scraped(harness))}
    assert not [name for name, family in families.items() if family.type == "histogram"]
    assert families["twopc_transactions"].samples[0].value == 1.0


async def test_openmetrics_is_answered_to_a_scraper_that_asks_for_it(harness: Harness) -> None:
    response = await harness.client.get(
        "/metrics", headers={**bearer("reader"), "Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status == 200
    assert response.content_type == "application/openmetrics-text"
    assert (await response.text()).endswith("# EOF\n")


async def test_a_client_token_may_not_read_the_metrics(harness: Harness) -> None:
    response = await harness.client.get("/metrics", headers=bearer("client-a"))
    assert response.status == 403
