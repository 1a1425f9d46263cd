"""The Kafka participant on the real test broker, through the signed protocol: what a
``read_committed`` consumer sees after prepare, commit, abort, restarts and failures."""

from __future__ import annotations

import asyncio
import base64
import re

import orjson
import pytest
from kafka_harness import EventsService

from adapters.kafka import KafkaResource, KafkaSettings, StageEntryState
from adapters.kafka import shard as shard_module
from adapters.kafka.testing import committed_offsets, create_topic, publish, read_committed, unique_name
from compose.supervisor import free_port
from participant_sdk.testing import StubCoordinator
from twopc_core import failpoints
from twopc_core.protocol import BranchStatus
from twopc_core.testing import wait_until


def order(n: int, topic: str, **extra: object) -> dict[str, object]:
    return {"topic": topic, "key": f"order-{n}", "value": {"order": n}, **extra}


async def values(kafka: str, topic: str) -> list[object]:
    return [orjson.loads(m.value) for m in await read_committed(kafka, [topic], settled=True) if m.value is not None]


async def test_commit_publishes_every_message_exactly_once(events: EventsService, kafka: str, topic: str) -> None:
    assert await events.vote("g1", [order(1, topic), order(2, topic)]) == "yes"
    assert await read_committed(kafka, [topic], settled=True) == []  # prepared: staged, not published

    assert (await events.commit("g1"))[1]["status"] == "committed"
    assert await events.commit("g1") == (200, {"status": "committed", "reason": None})  # repeated: answered the same
    assert sorted(v["order"] for v in await values(kafka, topic)) == [1, 2]
    assert events.resource.entry("g1", events.name).state is StageEntryState.COMMITTED


async def test_the_stage_holds_the_branch_state_prepared_then_committed(events: EventsService, topic: str) -> None:
    resource = events.resource
    assert resource.holds_branch_state
    assert await resource.branch_status("g1", events.name) is BranchStatus.UNKNOWN

    assert await events.vote("g1", [order(1, topic)]) == "yes"
    assert await resource.branch_status("g1", events.name) is BranchStatus.PREPARED

    await events.commit("g1")
    assert await resource.branch_status("g1", events.name) is BranchStatus.COMMITTED


async def test_an_aborted_kafka_branch_is_remembered_aborted_by_the_stage(events: EventsService, topic: str) -> None:
    assert await events.vote("g1", [order(1, topic)]) == "yes"
    await events.abort("g1")

    assert await events.resource.branch_status("g1", events.name) is BranchStatus.ABORTED


async def test_keys_headers_partitions_and_byte_values_arrive_as_given(
    events: EventsService, kafka: str, topic: str
) -> None:
    messages = [
        {"topic": topic, "key": "k", "value_text": "plain", "headers": {"source": "shop", "empty": None}},
        {"topic": topic, "key_b64": base64.b64encode(b"\x00\x01").decode(), "value_b64": "/w==", "partition": 2},
        {"topic": topic, "key": "gone", "partition": 1, "headers": [["h", "1"], ["h", "2"]]},  # a tombstone
    ]
    assert await events.vote("g-shapes", messages) == "yes"
    await events.commit("g-shapes")

    read = await read_committed(kafka, [topic], settled=True)
    by_key = {m.key: m for m in read}
    assert len(read) == 3
    assert by_key[b"k"].value == b"plain"
    assert by_key[b"k"].headers == (("source", b"shop"), ("empty", None))
    assert (by_key[b"\x00\x01"].value, by_key[b"\x00\x01"].partition) == (b"\xff", 2)
    assert (by_key[b"gone"].value, by_key[b"gone"].partition) == (None, 1)
    assert by_key[b"gone"].headers == (("h", b"1"), ("h", b"2"))


async def test_abort_leaves_nothing_visible(events: EventsService, kafka: str, topic: str) -> None:
    assert await events.vote("g-abort", [order(1, topic)]) == "yes"
    assert (await events.abort("g-abort"))[1]["status"] == "aborted"
    assert await events.vote("g-kept", [order(2, topic)]) == "yes"
    await events.commit("g-kept")

    assert [v["order"] for v in await values(kafka, topic)] == [2]
    assert events.resource.entry("g-abort", events.name).state is StageEntryState.ABORTED
    status, body = await events.commit("g-abort")
    assert (status, body["status"]) == (200, "aborted")  # the log answers: no publication


async def test_a_prepared_branch_survives_a_restart_and_commits_once(
    events: EventsService, kafka: str, topic: str, stub: StubCoordinator
) -> None:
    assert await events.vote("g-restart", [order(1, topic), order(2, topic)]) == "yes"
    stub.decide("g-restart", None)  # undecided: the restarted participant waits
    await events.restart()
    assert events.participant.in_doubt() == [("g-restart", events.name)]
    assert await events.resource.recover() == [("g-restart", events.name)]

    assert (await events.commit("g-restart"))[1]["status"] == "committed"
    await events.restart()  # the COMMITTED marker is read back: nothing is published again
    assert await events.resource.recover() == []
    await events.commit("g-restart")
    assert sorted(v["order"] for v in await values(kafka, topic)) == [1, 2]


async def test_a_restarted_participant_learns_the_decision_and_publishes_once(
    events: EventsService, kafka: str, topic: str, stub: StubCoordinator
) -> None:
    assert await events.vote("g-asks", [order(7, topic)]) == "yes"
    stub.decide("g-asks", "committed")
    await events.restart()
    await events.participant.resolve_in_doubt()
    assert [v["order"] for v in await values(kafka, topic)] == [7]
    assert events.participant.in_doubt() == []


async def test_messages_kafka_would_refuse_vote_no_at_prepare(events: EventsService, kafka: str, topic: str) -> None:
    compacted = await create_topic(kafka, unique_name("compacted"), configs={"cleanup.policy": "compact"})
    small = await create_topic(kafka, unique_name("small"), configs={"max.message.bytes": "2000"})
    reasons = {
        "unknown topic": await events.vote_reason("n1", [order(1, unique_name("missing"))]),
        "partition": await events.vote_reason("n2", [order(1, topic, partition=3)]),
        "over max_request_size": await events.vote_reason(
            "n3", [{"topic": topic, "value_text": "x" * (2 * 1024 * 1024)}]
        ),
        "over max.message.bytes": await events.vote_reason("n4", [{"topic": small, "value_text": "x" * 3000}]),
        "compacted without key": await events.vote_reason("n5", [{"topic": compacted, "value": 1}]),
        "stage topic": await events.vote_reason("n6", [{"topic": events.resource.settings.topic, "value": 1}]),
        "bad shape": await events.vote_reason("n7", {"messages": [{"topic": topic, "value": 1, "colour": "red"}]}),
    }
    assert "does not exist" in reasons["unknown topic"]
    assert "partitions 0..2, not 3" in reasons["partition"]
    assert "too large" in reasons["over max_request_size"] and "max_request_size" in reasons["over max_request_size"]
    assert "max.message.bytes" in reasons["over max.message.bytes"]
    assert "compacted" in reasons["compacted without key"]
    assert "internal" in reasons["stage topic"]
    assert "colour" in reasons["bad shape"]
    assert all(events.resource.entry(g, events.name) is None for g in ("n1", "n2", "n3", "n4", "n5", "n6", "n7"))
    assert await read_committed(kafka, [topic, compacted, small], settled=True) == []


async def test_a_message_just_under_the_limit_is_taken_and_published(
    events: EventsService, kafka: str, topic: str
) -> None:
    big = {"topic": topic, "key": "big", "value_b64": base64.b64encode(b"\x01" * 900_000).decode()}
    assert await events.vote("g-big", [big]) == "yes"
    assert events.resource.entry("g-big", events.name).chunks == 3  # 1.2 MB of base64 in 512 KiB pieces
    await events.commit("g-big")
    [read] = await read_committed(kafka, [topic], settled=True)
    assert read.value == b"\x01" * 900_000


async def test_an_empty_branch_is_read_only(events: EventsService) -> None:
    assert await events.vote("g-empty", []) == "read_only"
    assert events.resource.entry("g-empty", events.name) is None


async def test_a_large_batch_is_chunked_staged_and_published_in_order(
    make_events, kafka: str, topic: str, stub: StubCoordinator
) -> None:
    events = await make_events(chunk_bytes=64 * 1024)
    messages = [{"topic": topic, "key": "same", "value": {"n": n, "pad": "p" * 200}} for n in range(3000)]
    assert await events.vote("g-large", messages) == "yes"
    chunks = events.resource.entry("g-large", events.name).chunks
    assert chunks > 10
    stub.decide("g-large", None)
    await events.restart()  # reassembled from its chunks
    await events.commit("g-large")
    assert [v["n"] for v in await values(kafka, topic)] == list(range(3000))  # one key: one partition, in order


async def test_an_outcome_unknown_commit_that_happened_is_not_repeated(
    events: EventsService, kafka: str, topic: str
) -> None:
    assert await events.vote("g-unknown", [order(1, topic)]) == "yes"
    shard = next(s for s in events.resource.shards if ("g-unknown", events.name) in s.entries)
    # Kafka commits, then the answer is "lost": the shard fences, re-reads, finds the marker.
    failpoints.configure("kafka.after_publish_committed=1*error")
    assert (await events.commit("g-unknown"))[1]["status"] == "committed"
    assert shard.recoveries == 1
    assert [v["order"] for v in await values(kafka, topic)] == [1]


async def test_a_commit_that_failed_before_the_kafka_commit_is_retried_once(
    events: EventsService, kafka: str, topic: str
) -> None:
    assert await events.vote("g-retry", [order(1, topic), order(2, topic)]) == "yes"
    shard = next(s for s in events.resource.shards if ("g-retry", events.name) in s.entries)
    # Data sent, Kafka transaction still open: fencing aborts it, the retry publishes.
    failpoints.configure("kafka.after_publish_before_marker=1*error")
    assert (await events.commit("g-retry"))[1]["status"] == "committed"
    assert shard.recoveries == 1
    assert sorted(v["order"] for v in await values(kafka, topic)) == [1, 2]


async def test_a_commit_that_keeps_failing_is_refused_and_the_branch_stays_prepared(
    events: EventsService, kafka: str, topic: str
) -> None:
    assert await events.vote("g-stuck", [order(1, topic)]) == "yes"
    failpoints.configure("kafka.after_publish_before_marker=3*error")
    status, body = await events.commit("g-stuck")
    assert (status, body["error"]["code"]) == (503, "resource_error")
    assert "did not take the commit" in body["error"]["message"]
    assert await read_committed(kafka, [topic], settled=True) == []
    assert events.resource.entry("g-stuck", events.name).state is StageEntryState.PREPARED
    assert (await events.commit("g-stuck"))[1]["status"] == "committed"  # the coordinator's retry
    assert [v["order"] for v in await values(kafka, topic)] == [1]


async def test_concurrent_branches_share_kafka_transactions_and_each_publishes_once(
    make_events, kafka: str, topic: str
) -> None:
    events = await make_events(shards=1)
    gtids = [f"c{n}" for n in range(40)]
    votes = await asyncio.gather(*(events.vote(g, [order(n, topic)]) for n, g in enumerate(gtids)))
    assert set(votes) == {"yes"}
    answers = await asyncio.gather(*(events.commit(g) for g in gtids))
    assert {body["status"] for _, body in answers} == {"committed"}
    assert sorted(v["order"] for v in await values(kafka, topic)) == list(range(40))
    [shard] = events.resource.shards
    assert shard.transactions < 80  # 40 stages and 40 commits, grouped


async def test_forgotten_markers_are_gone_after_a_restart(
    events: EventsService, topic: str, stub: StubCoordinator
) -> None:
    assert await events.vote("g-old", [order(1, topic)]) == "yes"
    await events.commit("g-old")
    assert await events.vote("g-open", [order(2, topic)]) == "yes"
    stub.decide("g-open", None)
    forgotten = await events.resource.forget_finished(older_than=events.resource.entry("g-old", events.name).at + 1)
    assert forgotten == 1
    await events.restart()
    assert events.resource.entry("g-old", events.name) is None
    assert events.resource.entry("g-open", events.name).state is StageEntryState.PREPARED  # prepared ones stay


async def test_healthz_counts_branches(events: EventsService, topic: str) -> None:
    await events.vote("h1", [order(1, topic)])
    await events.vote("h2", [order(2, topic)])
    await events.commit("h2")
    response = await events.http.get("/healthz")
    body = await response.json()
    assert body["branches"] == {"prepared": 1, "committed": 1, "aborted": 0}
    assert (body["in_doubt"], body["shards"]) == (1, 2)


async def test_events_endpoint_refuses_bad_requests_before_staging(events: EventsService, topic: str) -> None:
    cases = [
        (b"not json", 400, "invalid_json"),
        (orjson.dumps({"gtid": "g"}), 422, "invalid_request"),
        (orjson.dumps({"gtid": "no spaces", "messages": []}), 422, "invalid_request"),
        (
            orjson.dumps({"gtid": "g-bad", "messages": [{"topic": unique_name("missing"), "value": 1}]}),
            422,
            "invalid_messages",
        ),
        (orjson.dumps({"gtid": "g-none", "messages": []}), 422, "invalid_messages"),
    ]
    for body, expected, code in cases:
        response = await events.http.post("/events", data=body)
        assert response.status == expected, await response.text()
        assert (await response.json())["error"]["code"] == code
    assert events.resource.counts() == {"prepared": 0, "committed": 0, "aborted": 0}


async def test_events_for_a_branch_already_staged_are_a_409_branch_exists(events: EventsService, topic: str) -> None:
    body = orjson.dumps({"gtid": "g-twice", "messages": [order(1, topic)]})
    first = await events.http.post("/events", data=body)
    second = await events.http.post("/events", data=body)

    assert first.status == 201, await first.text()
    assert second.status == 409
    assert (await second.json())["error"]["code"] == "branch_exists"


async def test_read_endpoint_shows_committed_messages(events: EventsService, topic: str) -> None:
    await events.vote("r1", [order(1, topic), {"topic": topic, "key": "t", "value_text": "hi"}])
    await events.commit("r1")
    response = await events.http.get(f"/events/{topic}")
    shown = (await response.json())["messages"]
    assert sorted((m["key"], str(m["value"])) for m in shown) == [("order-1", "{'order': 1}"), ("t", "hi")]
    assert (await events.http.get(f"/events/{topic}?limit=0")).status == 400
    assert (await events.http.get(f"/events/{unique_name('missing')}")).status == 404


async def test_the_stage_topic_is_made_compacted_with_the_configured_partitions(make_events, kafka: str) -> None:
    events = await make_events(shards=3)
    catalog = events.resource._catalog
    assert catalog is not None
    info = (await catalog.describe([events.resource.settings.topic]))[events.resource.settings.topic]
    assert info is not None and (info.partitions, info.compacted) == (3, True)
    assert len(events.resource.shards) == 3


async def test_a_failed_group_of_commits_is_retried_and_each_branch_publishes_once(
    make_events, kafka: str, topic: str
) -> None:
    events = await make_events(shards=1)
    for n in range(6):
        assert await events.vote(f"s{n}", [order(n, topic)]) == "yes"
    # The first (grouped) commit transaction fails: every branch in it is retried, alone.
    failpoints.configure("kafka.after_publish_before_marker=1*error")
    answers = await asyncio.gather(*(events.commit(f"s{n}") for n in range(6)))
    assert {body["status"] for _, body in answers} == {"committed"}
    assert sorted(v["order"] for v in await values(kafka, topic)) == list(range(6))
    [shard] = events.resource.shards
    assert shard.recoveries == 1


async def test_an_unreachable_broker_is_named_at_start() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    resource = KafkaResource(KafkaSettings(bootstrap_servers=nowhere, participant="nowhere", request_timeout=2))
    with pytest.raises(RuntimeError, match=re.escape(f"cannot reach Kafka at {nowhere}")):
        await resource.start()
    assert resource.shards == []


# -- consumer offsets in a branch ------------------------------------------------------


async def input_with(kafka: str, count: int) -> str:
    """A one-partition input topic holding ``count`` records (offsets 0..count-1)."""
    name = await create_topic(kafka, unique_name("input"))
    await publish(kafka, name, [(f"k{n}".encode(), f"v{n}".encode()) for n in range(count)])
    return name


async def committed(kafka: str, source: str) -> list[tuple[int, str]]:
    """What the group "pipeline" committed for the input topic: [(offset, metadata)]."""
    found = await committed_offsets(kafka, "pipeline", [(source, 0)])
    return [(c.offset, c.metadata) for c in found.values()]


def read_up_to(source: str, offset: int, group: str = "pipeline", **extra: object) -> dict[str, object]:
    return {"group": group, "partitions": [{"topic": source, "partition": 0, "offset": offset, **extra}]}


async def test_commit_commits_the_offsets_in_the_same_kafka_transaction_as_the_messages(
    events: EventsService, kafka: str, topic: str
) -> None:
    source = await input_with(kafka, 5)
    payload = {"messages": [order(1, topic)], "offsets": read_up_to(source, 3, metadata="batch-1")}
    assert await events.vote("g-off", payload) == "yes"
    assert await committed(kafka, source) == []  # staged, not committed

    assert (await events.commit("g-off"))[1]["status"] == "committed"
    assert await committed(kafka, source) == [(3, "batch-1")]
    assert [v["order"] for v in await values(kafka, topic)] == [1]


async def test_abort_drops_the_offsets(events: EventsService, kafka: str, topic: str) -> None:
    source = await input_with(kafka, 2)
    assert await events.vote("g-off-abort", {"messages": [order(1, topic)], "offsets": read_up_to(source, 2)}) == "yes"
    assert (await events.abort("g-off-abort"))[1]["status"] == "aborted"
    await events.commit("g-off-abort")  # answered aborted from the log
    assert await committed(kafka, source) == []


async def test_a_branch_of_offsets_alone_commits_them(events: EventsService, kafka: str) -> None:
    source = await input_with(kafka, 4)
    assert await events.vote("g-off-only", {"messages": [], "offsets": read_up_to(source, 4)}) == "yes"
    await events.commit("g-off-only")
    assert await committed(kafka, source) == [(4, "")]


async def test_offsets_kafka_cannot_hold_vote_no_at_prepare(events: EventsService, kafka: str, topic: str) -> None:
    source = await input_with(kafka, 3)
    past_end = {"messages": [order(1, topic)], "offsets": read_up_to(source, 4)}
    assert "4 is past the end of partition 0" in await events.vote_reason("g-past", past_end)
    no_partition = {
        "messages": [],
        "offsets": {"group": "pipeline", "partitions": [{"topic": source, "partition": 1, "offset": 0}]},
    }
    assert "has partitions 0..0, not 1" in await events.vote_reason("g-nopart", no_partition)
    no_topic = {"messages": [], "offsets": read_up_to(unique_name("missing"), 0)}
    assert "does not exist" in await events.vote_reason("g-notopic", no_topic)
    assert "offsets.group" in await events.vote_reason(
        "g-badgroup", {"messages": [], "offsets": read_up_to(source, 1, group="")}
    )


async def test_staged_offsets_survive_a_restart_and_are_committed_once(
    events: EventsService, kafka: str, topic: str, stub: StubCoordinator
) -> None:
    source = await input_with(kafka, 3)
    assert (
        await events.vote("g-off-restart", {"messages": [order(1, topic)], "offsets": read_up_to(source, 3)}) == "yes"
    )
    stub.decide("g-off-restart", None)
    await events.restart()
    entry = events.resource.entry("g-off-restart", events.name)
    assert entry is not None and entry.offsets is not None and entry.offsets.partitions[0].offset == 3

    await events.commit("g-off-restart")
    assert await committed(kafka, source) == [(3, "")]
    assert [v["order"] for v in await values(kafka, topic)] == [1]


async def test_a_commit_that_failed_before_the_kafka_commit_commits_the_offsets_on_its_retry(
    events: EventsService, kafka: str, topic: str
) -> None:
    source = await input_with(kafka, 2)
    assert await events.vote("g-off-retry", {"messages": [order(1, topic)], "offsets": read_up_to(source, 2)}) == "yes"
    # Messages and offsets sent, Kafka transaction open: fencing aborts both, the retry does both.
    failpoints.configure("kafka.after_publish_before_marker=1*error")
    assert (await events.commit("g-off-retry"))[1]["status"] == "committed"
    assert await committed(kafka, source) == [(2, "")]
    assert [v["order"] for v in await values(kafka, topic)] == [1]


async def test_a_commit_that_keeps_failing_commits_no_offsets(events: EventsService, kafka: str, topic: str) -> None:
    source = await input_with(kafka, 2)
    assert await events.vote("g-off-stuck", {"messages": [order(1, topic)], "offsets": read_up_to(source, 2)}) == "yes"
    failpoints.configure("kafka.after_publish_before_marker=3*error")
    assert (await events.commit("g-off-stuck"))[0] == 503
    assert await committed(kafka, source) == []


async def test_events_endpoint_stages_offsets_with_the_messages(events: EventsService, kafka: str, topic: str) -> None:
    source = await input_with(kafka, 2)
    body = {"gtid": "g-ep-off", "messages": [order(1, topic)], "offsets": read_up_to(source, 2)}
    response = await events.http.post("/events", data=orjson.dumps(body))
    assert response.status == 201, await response.text()
    await events.commit("g-ep-off")
    assert await committed(kafka, source) == [(2, "")]

    past_end = {"gtid": "g-ep-past", "messages": [order(2, topic)], "offsets": read_up_to(source, 9)}
    refused = await events.http.post("/events", data=orjson.dumps(past_end))
    assert refused.status == 422
    assert "past the end" in (await refused.json())["error"]["message"]


async def test_offsets_of_a_group_the_participant_does_not_serve_vote_no(make_events, kafka: str, topic: str) -> None:
    events = await make_events(shards=1, offset_groups=("pipeline", "jobs-*"))
    source = await input_with(kafka, 2)
    refused = {"messages": [order(1, topic)], "offsets": read_up_to(source, 1, group="someone-else")}
    assert "does not commit offsets for group 'someone-else'" in await events.vote_reason("g-grp-no", refused)
    assert await events.vote("g-grp-exact", {"messages": [], "offsets": read_up_to(source, 1)}) == "yes"
    assert (
        await events.vote("g-grp-prefix", {"messages": [], "offsets": read_up_to(source, 1, group="jobs-7")}) == "yes"
    )


async def test_a_shard_that_could_not_recover_fences_its_open_transaction_once_the_broker_answers(
    make_events, kafka: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await make_events(shards=1)
    assert await events.vote("g-hung", [order(1, topic)]) == "yes"
    real = shard_module.fenced_producer
    refusals = 5  # every try of the commit and its recoveries: as if the broker were away

    async def away_then_back(settings: KafkaSettings, index: int) -> object:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise ConnectionError("the broker is away")
        return await real(settings, index)

    monkeypatch.setattr(shard_module, "fenced_producer", away_then_back)
    # The commit's Kafka transaction fails with the messages sent: it stays open on the broker.
    failpoints.configure("kafka.after_publish_before_marker=1*error")
    assert (await events.commit("g-hung"))[0] == 503
    failpoints.configure(None)
    # No more work comes to the shard, yet it fences that transaction once it can: a
    # read_committed consumer of the topic is not held up until the broker's timeout.
    assert await read_committed(kafka, [topic], timeout=10, settled=True) == []
    [shard] = events.resource.shards
    assert await wait_until(lambda: shard._producer is not None, timeout=10, message="the shard recovered")
    assert (await events.commit("g-hung"))[1]["status"] == "committed"
    assert [v["order"] for v in await values(kafka, topic)] == [1]
