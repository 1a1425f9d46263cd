"""``twopc kafka``: small Kafka chores for the Kafka participant (topics, the stage)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

__all__ = ["app", "create_topic", "publish", "stage"]

app = typer.Typer(
    help="Kafka chores: make topics, write to them, look into a participant's stage.", no_args_is_help=True
)

Bootstrap = Annotated[str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]")]


@app.command("create-topic")
def create_topic(
    name: Annotated[str, typer.Argument(help="the topic to create")],
    bootstrap: Bootstrap,
    partitions: Annotated[int, typer.Option(help="how many partitions", min=1)] = 3,
    replication_factor: Annotated[int, typer.Option(help="replicas of each partition (production: 3)", min=1)] = 1,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="a topic of that name already there is no error (for set-up jobs)")
    ] = False,
) -> None:
    """Create a topic (the dev broker does not create topics on first use)."""
    from adapters.kafka.topics import create_topic as create

    try:
        asyncio.run(create(bootstrap, name, partitions, replication_factor=replication_factor, exist_ok=exist_ok))
    except Exception as exc:
        typer.echo(f"creating {name!r} failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{name} is there (created, or found with --exist-ok)"
        if exist_ok
        else f"created {name} ({partitions} partitions)"
    )


@app.command("publish")
def publish(
    topic: Annotated[str, typer.Argument(help="the topic to write to")],
    values: Annotated[list[str], typer.Argument(help="the values, one message each (UTF-8 text, JSON or not)")],
    bootstrap: Bootstrap,
    key: Annotated[str | None, typer.Option(help="the key of every message (default: none)")] = None,
) -> None:
    """Write messages to a topic, outside any transaction (input for the pipeline, say)."""
    from adapters.kafka.topics import publish as send

    records = [(None if key is None else key.encode(), value.encode()) for value in values]
    try:
        asyncio.run(send(bootstrap, topic, records))
    except Exception as exc:
        typer.echo(f"writing to {topic!r} failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {len(records)} messages to {topic}")


@app.command("stage")
def stage(
    participant: Annotated[str, typer.Option(help="the Kafka participant's name")],
    bootstrap: Bootstrap,
    stage_topic: Annotated[str | None, typer.Option(help="its stage topic (default _twopc_stage.NAME)")] = None,
) -> None:
    """List the branches a Kafka participant's stage holds, as JSON lines (read only: it fences nothing)."""
    from adapters.kafka.clients import make_admin, read_stage
    from adapters.kafka.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=bootstrap, participant=participant, stage_topic=stage_topic)

    async def read() -> list[dict[str, object]]:
        admin = make_admin(settings)
        await admin.start()
        try:
            [described] = await admin.describe_topics([settings.topic])
        finally:
            await admin.close()
        if described["error_code"] != 0:
            raise RuntimeError(f"no stage topic {settings.topic!r}")
        folds = await read_stage(settings, range(len(described["partitions"])))
        rows: list[dict[str, object]] = []
        for shard, fold in sorted(folds.items()):
            for entry in fold.finish().values():
                rows.append({"gtid": entry.gtid, "state": entry.state.value, "shard": shard, "at": entry.at})
            rows.extend({"shard": shard, "problem": problem} for problem in fold.problems)
        return rows

    try:
        rows = asyncio.run(read())
    except Exception as exc:
        typer.echo(f"reading the stage failed: {exc}", err=True)
        raise typer.Exit(1) from None
    for row in rows:
        typer.echo(json.dumps(row))
