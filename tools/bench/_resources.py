"""What the real-participant workloads need from outside: a PostgreSQL server to create
databases on, a Kafka broker to create topics on; both removed when the run ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql

from adapters.kafka.topics import create_topic, delete_topics
from adapters.postgres.testing import database_dsn, drop_database
from compose.dev import read_services

__all__ = [
    "BenchSetupError",
    "kafka_bootstrap",
    "postgres_server",
    "run_database",
    "run_topics",
]


class BenchSetupError(RuntimeError):
    """What a workload needs is missing or refused; the message says how to get it."""


def postgres_server(dsn: str | None) -> str:
    """The server to benchmark on: ``dsn`` when given, else the one ``twopc dev up postgres`` runs."""
    found = dsn or read_services().get("postgres", {}).get("dsn")
    if not found:
        raise BenchSetupError(
            "this workload needs a PostgreSQL server whose role may create databases: "
            "pass --postgres-dsn (or set TWOPC_BENCH_POSTGRES_DSN), or start one with `twopc dev up postgres`"
        )
    return found


def kafka_bootstrap(bootstrap: str | None) -> str:
    """The broker to benchmark on: ``bootstrap`` when given, else the one ``twopc dev up kafka`` runs."""
    found = bootstrap or read_services().get("kafka", {}).get("bootstrap")
    if not found:
        raise BenchSetupError(
            "this workload needs a Kafka broker: pass --kafka-bootstrap (or set TWOPC_BENCH_KAFKA_BOOTSTRAP), "
            "or start one with `twopc dev up kafka`"
        )
    return found


@asynccontextmanager
async def run_database(server_dsn: str, name: str) -> AsyncIterator[str]:
    """A new database for this run; dropped afterwards with any transaction left prepared in it."""
    try:
        async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True, connect_timeout=10) as admin:
            await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchSetupError(f"cannot create the database {name!r} on the PostgreSQL server: {exc}") from exc
    try:
        yield database_dsn(server_dsn, name)
    finally:
        await drop_database(server_dsn, name)


@asynccontextmanager
async def run_topics(
    bootstrap: str, topic: str, partitions: int, also_delete: tuple[str, ...] = ()
) -> AsyncIterator[str]:
    """A new topic for this run; deleted afterwards, with ``also_delete`` (topics a
    participant made for itself, such as its stage)."""
    try:
        await create_topic(bootstrap, topic, partitions=partitions)
    except Exception as exc:  # aiokafka's errors have no common base worth naming
        raise BenchSetupError(f"cannot create the topic {topic!r} on the Kafka broker {bootstrap}: {exc!r}") from exc
    try:
        yield topic
    finally:
        await delete_topics(bootstrap, [topic, *also_delete])
