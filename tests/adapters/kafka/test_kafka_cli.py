"""``twopc kafka create-topic``, ``publish`` and ``stage`` against the real broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kafka_harness import EventsService
from typer.testing import CliRunner

from adapters.kafka.testing import create_topic, read_committed, unique_name
from participant_sdk.testing import StubCoordinator
from tools.cli._app import app


async def twopc(args: list[str]) -> Any:
    # The commands run their own event loop: give them a thread of their own.
    return await asyncio.to_thread(CliRunner().invoke, app, args)


async def test_create_topic_makes_a_topic_the_participant_can_publish_to(events: EventsService, kafka: str) -> None:
    name = unique_name("cli")
    result = await twopc(["kafka", "create-topic", name, "--bootstrap", kafka, "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert await events.vote("g-cli", [{"topic": name, "partition": 1, "value": 1}]) == "yes"
    await events.commit("g-cli")
    assert [(m.partition, m.value) for m in await read_committed(kafka, [name], settled=True)] == [(1, b"1")]

    again = await twopc(["kafka", "create-topic", name, "--bootstrap", kafka])
    assert again.exit_code == 1 and "already exists" in again.output
    # A set-up job that runs on every start of a deployment asks for it again, and goes on.
    tolerated = await twopc(["kafka", "create-topic", name, "--bootstrap", kafka, "--partitions", "5", "--exist-ok"])
    assert tolerated.exit_code == 0, tolerated.output


async def test_publish_writes_each_value_as_a_message_with_the_key_given(kafka: str) -> None:
    name = await create_topic(kafka, unique_name("cli"))
    result = await twopc(["kafka", "publish", name, '{"id": "o-1"}', "plain", "--bootstrap", kafka, "--key", "k"])
    assert result.exit_code == 0, result.output
    assert [(m.key, m.value) for m in await read_committed(kafka, [name])] == [
        (b"k", b'{"id": "o-1"}'),
        (b"k", b"plain"),
    ]

    missing = await twopc(["kafka", "publish", unique_name("missing"), "x", "--bootstrap", kafka])
    assert missing.exit_code == 1 and "failed" in missing.output


async def test_stage_lists_the_participants_branches(
    events: EventsService, kafka: str, topic: str, stub: StubCoordinator
) -> None:
    await events.vote("g-prepared", [{"topic": topic, "value": 1}])
    await events.vote("g-committed", [{"topic": topic, "value": 2}])
    await events.commit("g-committed")
    result = await twopc(["kafka", "stage", "--participant", events.name, "--bootstrap", kafka])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert sorted((r["gtid"], r["state"]) for r in rows) == [("g-committed", "committed"), ("g-prepared", "prepared")]

    missing = await twopc(["kafka", "stage", "--participant", unique_name("nobody"), "--bootstrap", kafka])
    assert missing.exit_code == 1 and "no stage topic" in missing.output
