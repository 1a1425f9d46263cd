"""Tools for tests that need a real Kafka broker: find it, name things uniquely, make
topics, publish to them, read what a ``read_committed`` consumer sees and what a group
committed (from :mod:`adapters.kafka.topics`).

The broker is the one ``TWOPC_TEST_KAFKA_BOOTSTRAP`` names, else the one ``twopc dev up
kafka`` started (``var/dev/services.json``). There is no skipping: without a broker that
answers, :func:`bootstrap_servers` raises, saying how to get one.
"""

from __future__ import annotations

import asyncio
import os
import secrets

from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka.topics import CommittedOffset, ReadMessage, committed_offsets, create_topic, publish, read_committed
from compose.dev import read_services

__all__ = [
    "BOOTSTRAP_ENV_VAR",
    "CommittedOffset",
    "ReadMessage",
    "bootstrap_servers",
    "committed_offsets",
    "create_topic",
    "publish",
    "read_committed",
    "unique_name",
]

BOOTSTRAP_ENV_VAR = "TWOPC_TEST_KAFKA_BOOTSTRAP"


def bootstrap_servers(timeout: float = 10.0) -> str:
    """The test broker's bootstrap address; RuntimeError saying how to get one if none answers."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV_VAR)
    source = BOOTSTRAP_ENV_VAR
    if not bootstrap:
        bootstrap = read_services().get("kafka", {}).get("bootstrap")
        source = "var/dev/services.json (twopc dev up kafka)"
    if not bootstrap:
        raise RuntimeError(
            f"no Kafka broker for the tests: run `twopc dev up kafka` (make test does) or set {BOOTSTRAP_ENV_VAR}"
        )
    try:
        asyncio.run(_describe(bootstrap, timeout))
    except Exception as exc:
        raise RuntimeError(
            f"the Kafka broker {bootstrap} from {source} does not answer ({exc!r}); "
            "start it with `twopc dev up kafka` or fix the address"
        ) from exc
    return bootstrap


async def _describe(bootstrap: str, timeout: float) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            await admin.describe_cluster()
    finally:
        await admin.close()


def unique_name(label: str) -> str:
    """A topic or participant name no other test uses (the broker outlives a test)."""
    return f"{label}-{secrets.token_hex(4)}"
