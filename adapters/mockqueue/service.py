"""The mock queue service: the participant protocol at ``/twopc``, the queue's consumer
API at ``/queue/items``, fault switches at ``/queue/faults`` and ``/healthz``.

One file in the data directory, ``queue.db``: the staged and committed items and the
participant log's rows, written through one writer, so that a branch's items and its
row commit together. (A data directory an older version left with the participant log
in ``participant.db`` keeps using that file.)

A body over ``max_body_bytes`` is answered 413 (JSON). :func:`run` serves HTTPS with an
SSL context, and reaches an https coordinator with ``coordinator_ssl``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiohttp import web
from pydantic import ValidationError

from adapters.mockqueue.faults import Faults, FaultSwitch, garbage_middleware
from adapters.mockqueue.resource import MockQueueResource
from adapters.mockqueue.store import QueueStore
from participant_sdk import MAX_BODY_BYTES, Participant
from twopc_core.http import HttpError, error_middleware, invalid_body, json_response
from twopc_core.metrics import ScrapeCollector
from twopc_core.runtime import run_service
from twopc_core.serving import ServerLimits

__all__ = ["FAULTS", "PARTICIPANT", "STORE", "build_app", "run"]

logger = structlog.get_logger("adapters.mockqueue")

FAULTS = web.AppKey("mockqueue.faults", FaultSwitch)
STORE = web.AppKey("mockqueue.store", QueueStore)
PARTICIPANT = web.AppKey("mockqueue.participant", Participant)


def build_app(
    name: str,
    data_dir: str | Path,
    coordinator_url: str | Sequence[str],
    secret: str,
    inquiry_interval: float = 5.0,
    *,
    retention: float = 3600.0,
    faults: FaultSwitch | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    coordinator_ssl: ssl.SSLContext | None = None,
    metrics: bool = True,
) -> web.Application:
    """The whole service as an aiohttp application (the participant starts with it).

    ``coordinator_url``: the coordinator's base URL, or every replica's;
    ``coordinator_ssl``: the TLS of an https one.
    """
    data = Path(data_dir)
    switch = faults or FaultSwitch()
    store = QueueStore(data / "queue.db")
    resource = MockQueueResource(store, switch)
    participant = Participant(
        name=name,
        resource=resource,
        secret=secret,
        coordinator_url=coordinator_url,
        log_path=_participant_log_path(data),
        inquiry_interval=inquiry_interval,
        retention=retention,
        coordinator_ssl=coordinator_ssl,
        metrics=metrics,
    )
    app = web.Application(client_max_size=max_body_bytes)
    app[FAULTS], app[STORE], app[PARTICIPANT] = switch, store, participant
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", participant.metrics_handler())
    participant.metrics_registry.register(ScrapeCollector(resource.metric_families))
    # The queue's own API answers its errors through the shared edge, in a sub-app of
    # its own: the protocol's calls pass through no middleware but the SDK's.
    queue = web.Application(middlewares=[error_middleware(service="the mock queue")])
    queue.router.add_get("/items", _items)
    queue.router.add_get("/faults", _get_faults)
    queue.router.add_post("/faults", _set_faults)
    app.add_subapp("/queue", queue)
    protocol = participant.app(middlewares=[garbage_middleware(switch)], max_body_bytes=max_body_bytes)
    app.add_subapp("/twopc", protocol)
    return app


def _participant_log_path(data: Path) -> Path:
    """Where the participant log lives: in the queue's own database, unless an older
    version of the service left it in a file of its own."""
    legacy = data / "participant.db"
    return legacy if legacy.exists() else data / "queue.db"


async def _healthz(request: web.Request) -> web.Response:
    participant = request.app[PARTICIPANT]
    return json_response({"status": "ok", "name": participant.name, "in_doubt": participant.in_doubt_count})


async def _items(request: web.Request) -> web.Response:
    """Committed items in queue order: ``?after=SEQ`` to page on, ``?limit=N``."""
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        raise HttpError(400, "invalid_request", "after and limit must be integers") from None
    if after < 0 or (limit is not None and limit < 0):
        raise HttpError(400, "invalid_request", "after and limit must not be negative")
    items = await request.config_dict[STORE].items(after, limit)
    return json_response({"items": [{"seq": i.seq, "gtid": i.gtid, "value": i.value} for i in items]})


async def _get_faults(request: web.Request) -> web.Response:
    return json_response(request.config_dict[FAULTS].current.model_dump())


async def _set_faults(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        faults = Faults.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise invalid_body(exc, what="the faults body", status=400) from None
    current = request.config_dict[FAULTS].set(faults)
    logger.warning("faults set", participant=request.config_dict[PARTICIPANT].name, **current.model_dump())
    return json_response(current.model_dump())


def run(
    name: str,
    host: str,
    port: int,
    data_dir: str | Path,
    coordinator_url: str | Sequence[str],
    secret: str,
    inquiry_interval: float = 5.0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    coordinator_ssl: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    metrics: bool = True,
) -> None:
    """Serve the mock queue until SIGINT or SIGTERM (``coordinator_url``: one URL, or every
    replica's), over HTTPS with ``ssl_context``."""
    app = build_app(
        name, data_dir, coordinator_url, secret, inquiry_interval, coordinator_ssl=coordinator_ssl, metrics=metrics
    )
    scheme = "https" if ssl_context else "http"

    def listening(*_args: object, **_kwargs: object) -> None:
        logger.info("listening", participant=name, url=f"{scheme}://{host}:{port}", data=str(data_dir))

    run_service(app, host, port, print=listening, ssl_context=ssl_context, limits=limits)
