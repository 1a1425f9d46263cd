"""A participant's own figures: votes, outcomes, latencies and what is in doubt."""

from __future__ import annotations

from prometheus_client import generate_latest

from participant_sdk.testing import ParticipantTestServer
from twopc_core.metrics import totals
from twopc_core.protocol import Vote


def figures(harness: ParticipantTestServer) -> dict[str, float]:
    return totals(generate_latest(harness.participant.metrics_registry).decode())


def sample(harness: ParticipantTestServer, name: str, **labels: str) -> float:
    registry = harness.participant.metrics_registry
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name} {labels}"
    return found


async def test_votes_and_outcomes_are_counted_once_each(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    await harness.prepare("g1")  # a repeated prepare answers as the first, and is not a vote
    await harness.commit("g1")
    await harness.prepare("g2")
    await harness.abort("g2")
    harness.resource.vote = Vote.NO
    await harness.prepare("g3")

    assert sample(harness, "twopc_branch_votes_total", vote="yes") == 2
    assert sample(harness, "twopc_branch_votes_total", vote="no") == 1
    assert sample(harness, "twopc_branches_total", outcome="committed") == 1
    assert sample(harness, "twopc_branches_total", outcome="aborted") == 1
    assert sample(harness, "twopc_branch_prepare_duration_seconds_count") == 4
    assert sample(harness, "twopc_branch_phase_two_duration_seconds_count", outcome="committed") == 1


async def test_a_prepared_branch_is_in_doubt_until_its_outcome_arrives(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    assert figures(harness)["twopc_in_doubt_branches"] == 1
    assert figures(harness)["twopc_oldest_in_doubt_branch_age_seconds"] >= 0

    await harness.commit("g1")
    assert figures(harness)["twopc_in_doubt_branches"] == 0
    assert figures(harness)["twopc_oldest_in_doubt_branch_age_seconds"] == 0


async def test_the_in_doubt_loop_counts_its_rounds(harness: ParticipantTestServer) -> None:
    # The test server waits for the first round before it hands the participant over.
    assert figures(harness)["twopc_inquiry_rounds"] >= 1
