"""The pipeline example: consume → process → produce exactly once (``twopc pipeline serve``).

It reads order events from the input topic (a :class:`~adapters.kafka.source.KafkaSource`,
so its reads are part of each batch's global transaction) and, for each event, books a
row in the bank's ledger in PostgreSQL (``POST /ledger`` at the bank: early prepare) and
publishes an ``order-accepted`` event to the output topic (through the Kafka
participant, which commits the batch's consumer offsets in the same Kafka transaction).
All three happen once per event, or not at all, through crashes and rebalances.

An input event is JSON ``{"id": str, "amount": int, "account": str}`` (``account``
optional, default ``orders``). An event that does not read so is not booked; it is
published as rejected, with the reason, so that nothing in the input is lost.

``GET /healthz``: the group, the partitions this instance owns, batches committed and
aborted, batches found in flight when it took a partition over (and of those, the
committed ones), records processed.

TLS: ``coordinator_ssl`` and ``bank_ssl`` for an https coordinator and bank; :func:`run`
serves HTTPS with an SSL context.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from adapters.kafka.source import KafkaSource, SourceBatch, SourceRecord
from participant_sdk.client import CoordinatorClient
from twopc_core import failpoints
from twopc_core.http import json_response
from twopc_core.runtime import run_service
from twopc_core.serving import ServerLimits

__all__ = ["SOURCE", "BankError", "build_app", "order_of", "run"]

logger = structlog.get_logger("adapters.kafka.pipeline")

SOURCE = web.AppKey("pipeline.source", KafkaSource)
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_BIGINT = 2**63 - 1
#: Only /healthz is served: no body is read, so a small bound is plenty.
_MAX_BODY = 64 * 1024


class BankError(RuntimeError):
    """The bank did not book the batch (its answer says why): the batch is aborted."""


def order_of(record: SourceRecord) -> tuple[dict[str, Any] | None, str]:
    """``(ledger entry, event id)`` of an input record; the entry is None, and the id the
    record's place, for a record that is not an order event."""
    place = f"{record.topic}/{record.partition}/{record.offset}"
    try:
        event = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None, place
    if not isinstance(event, dict):
        return None, place
    event_id, amount, account = event.get("id"), event.get("amount"), event.get("account", "orders")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
        return None, place
    if not isinstance(amount, int) or isinstance(amount, bool) or abs(amount) > _BIGINT:
        return None, event_id
    if not isinstance(account, str) or not _ACCOUNT.match(account):
        return None, event_id
    return {"event_id": event_id, "account": account, "amount": amount}, event_id


class _Pipeline:
    def __init__(self, bank_url: str, output_topic: str, bank_ssl: ssl.SSLContext | None) -> None:
        self.bank_url = bank_url.rstrip("/")
        self.output_topic = output_topic
        self.bank_ssl: ssl.SSLContext | bool = bank_ssl or True
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, batch: SourceBatch) -> None:
        entries = []
        for record in batch.records:
            entry, event_id = order_of(record)
            if entry is None:
                value: dict[str, Any] = {"id": event_id, "accepted": False, "reason": "not an order event"}
            else:
                entries.append(entry)
                value = {"id": event_id, "accepted": True, "amount": entry["amount"], "account": entry["account"]}
            headers = {"twopc-source": f"{record.topic}/{record.partition}/{record.offset}"}
            batch.publish({"topic": self.output_topic, "key": event_id, "value": value, "headers": headers})
        if entries:
            await self._book(batch.gtid, entries)

    async def _book(self, gtid: str, entries: list[dict[str, Any]]) -> None:
        assert self.session is not None
        body = orjson.dumps({"gtid": gtid, "entries": entries})
        async with self.session.post(
            f"{self.bank_url}/ledger", data=body, headers={"Content-Type": "application/json"}, ssl=self.bank_ssl
        ) as response:
            if response.status != 201:
                raise BankError(f"the bank answered {response.status}: {(await response.text())[:300]}")


def build_app(
    *,
    bootstrap: str,
    coordinator_url: str | Sequence[str],
    bank_url: str,
    kafka_participant: str,
    coordinator_token: str | None = None,
    group: str = "pipeline",
    input_topic: str = "orders",
    output_topic: str = "order-accepted",
    max_batch: int = 100,
    transaction_timeout_ms: int = 30_000,
    session_timeout_ms: int = 10_000,
    unsafe_offsets_after_commit: bool = False,
    coordinator_ssl: ssl.SSLContext | None = None,
    bank_ssl: ssl.SSLContext | None = None,
) -> web.Application:
    """The pipeline as an aiohttp application: the source runs while the app does.

    ``coordinator_token``: the bearer token (role ``client``) it begins its batches with.
    """
    coordinator = CoordinatorClient(coordinator_url, timeout=15.0, token=coordinator_token, ssl=coordinator_ssl)
    source = KafkaSource(
        bootstrap,
        group,
        [input_topic],
        coordinator,
        kafka_participant,
        max_batch=max_batch,
        transaction_timeout_ms=transaction_timeout_ms,
        session_timeout_ms=session_timeout_ms,
        unsafe_offsets_after_commit=unsafe_offsets_after_commit,
    )
    pipeline = _Pipeline(bank_url, output_topic, bank_ssl)
    app = web.Application(client_max_size=_MAX_BODY)
    app[SOURCE] = source

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        pipeline.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15.0))
        await source.start()
        running = asyncio.create_task(source.run(pipeline.handle), name="pipeline")
        running.add_done_callback(_report_end)
        # A chaos run arms failpoints in a live process through the file.
        watcher = asyncio.create_task(failpoints.watch_file(), name="failpoints-file")
        yield
        watcher.cancel()
        source.stop()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
        await source.close()
        await coordinator.close()
        await pipeline.session.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", _healthz)
    return app


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the pipeline stopped", error=repr(task.exception()))


async def _healthz(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    return json_response(
        {
            "status": "ok",
            "group": source.group,
            "topics": source.topics,
            "assignment": sorted(f"{tp.topic}/{tp.partition}" for tp in source.assignment),
            "committed_batches": source.committed_batches,
            "aborted_batches": source.aborted_batches,
            "resumed_batches": source.resumed_batches,
            "found_in_flight": source.found_in_flight,
            "records": source.records,
        }
    )


def run(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    **options: Any,
) -> None:
    """Serve the pipeline until SIGINT or SIGTERM, over HTTPS with ``ssl_context``
    (``options``: those of :func:`build_app`)."""
    app = build_app(**options)
    scheme = "https" if ssl_context else "http"

    def listening(*_args: object, **_kwargs: object) -> None:
        logger.info("listening", url=f"{scheme}://{host}:{port}", group=options.get("group", "pipeline"))

    run_service(app, host, port, print=listening, ssl_context=ssl_context, limits=limits)
