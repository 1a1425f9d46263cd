"""The "events" example service: Kafka messages that take part in global transactions.

``twopc events serve --name events --port 7081 --bootstrap 127.0.0.1:9092
--coordinator http://127.0.0.1:7070 --secret change-me`` (``--coordinator`` once per
coordinator replica, or their URLs comma-separated)

- ``/twopc``: the participant protocol; a prepare's payload is ``{"messages": [...]}``,
  with consumer offsets to commit alongside if it has ``"offsets"`` (see
  :mod:`adapters.kafka.messages`), so a client can enlist ``events`` with its messages
  like any other participant.
- ``POST /events`` ``{"gtid": "...", "messages": [...], "offsets": {...}}`` (``offsets``
  optional): the application's own way in
  (early prepare): the service stages the messages in Kafka at once, logs its YES and
  enlists itself with the coordinator as already prepared. The messages appear to
  ``read_committed`` consumers when, and only when, the coordinator commits.
- ``GET /events/{topic}?limit=N``: what a ``read_committed`` consumer reads from the
  topic now (values shown as JSON when they are JSON, else as text or base64).
- ``GET /healthz``: the participant's name, branches in doubt and per state.

Files in the data directory: ``participant.db`` (the participant log). The staged
messages live in Kafka, in the stage topic ``_twopc_stage.{name}``.

A body over ``max_body_bytes`` is answered 413 (JSON). :func:`run` serves HTTPS with an
SSL context, and reaches an https coordinator with ``coordinator_ssl``.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from adapters.kafka import KafkaResource, KafkaSettings, PayloadError
from adapters.kafka.topics import read_committed
from participant_sdk import PARTICIPANT_ERRORS, Participant
from twopc_core.http import DomainErrors, HttpError, error_middleware, json_response
from twopc_core.metrics import ScrapeCollector
from twopc_core.protocol import GTID_PATTERN
from twopc_core.runtime import run_service
from twopc_core.serving import ServerLimits

__all__ = ["PARTICIPANT", "RESOURCE", "build_app", "run"]

logger = structlog.get_logger("adapters.kafka.events")

PARTICIPANT = web.AppKey("events.participant", Participant)
RESOURCE = web.AppKey("events.resource", KafkaResource)

#: Large enough for a batch of prepares carrying messages.
_MAX_BODY = 64 * 1024 * 1024
_MAX_READ = 10_000
_GTID = re.compile(GTID_PATTERN)

#: The service's errors, and the participant's (an early prepare), by status and code.
_ERRORS: DomainErrors = {**PARTICIPANT_ERRORS, PayloadError: (422, "invalid_messages")}


def build_app(
    name: str,
    bootstrap: str,
    coordinator_url: str | Sequence[str],
    secret: str,
    data_dir: str | Path,
    inquiry_interval: float = 5.0,
    *,
    retention: float = 3600.0,
    max_body_bytes: int = _MAX_BODY,
    coordinator_ssl: ssl.SSLContext | None = None,
    metrics: bool = True,
    **kafka_options: Any,
) -> web.Application:
    """The whole service as an aiohttp application (the participant starts with it).

    ``coordinator_url``: the coordinator's base URL, or every replica's;
    ``coordinator_ssl``: the TLS of an https one. ``kafka_options`` are further
    :class:`KafkaSettings` (``shards``, ``stage_topic``, ...).
    """
    resource = KafkaResource(KafkaSettings(bootstrap_servers=bootstrap, participant=name, **kafka_options))
    participant = Participant(
        name=name,
        resource=resource,
        secret=secret,
        coordinator_url=coordinator_url,
        log_path=Path(data_dir) / "participant.db",
        inquiry_interval=inquiry_interval,
        retention=retention,
        coordinator_ssl=coordinator_ssl,
        metrics=metrics,
    )
    app = web.Application(client_max_size=max_body_bytes)
    app[PARTICIPANT], app[RESOURCE] = participant, resource
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", participant.metrics_handler())
    participant.metrics_registry.register(ScrapeCollector(resource.metric_families))
    # The service's own API answers its errors through the shared edge, in a sub-app of
    # its own: the protocol's calls pass through no middleware but the SDK's.
    events = web.Application(middlewares=[error_middleware(_ERRORS, service="the events service")])
    events.router.add_post("", _publish)
    events.router.add_get("/{topic}", _read)
    app.add_subapp("/events", events)
    app.add_subapp("/twopc", participant.app(max_body_bytes=max_body_bytes))
    return app


async def _healthz(request: web.Request) -> web.Response:
    participant, resource = request.app[PARTICIPANT], request.app[RESOURCE]
    return json_response(
        {
            "status": "ok",
            "name": participant.name,
            "in_doubt": participant.in_doubt_count,
            "branches": resource.counts(),
            "stage_topic": resource.settings.topic,
            "shards": len(resource.shards),
        }
    )


async def _publish(request: web.Request) -> web.Response:
    """Stage messages as this participant's branch of ``gtid`` and enlist it (early prepare).

    Messages Kafka would refuse, and what the participant refuses (the branch exists,
    the coordinator refused or could not be reached), are answered by the error middleware.
    """
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise HttpError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(body, dict) or not {"gtid", "messages"} <= set(body) <= {"gtid", "messages", "offsets"}:
        raise HttpError(
            422, "invalid_request", 'the body must be {"gtid": "...", "messages": [...]}, with "offsets" optional'
        )
    gtid, messages, offsets = body["gtid"], body["messages"], body.get("offsets")
    if not isinstance(gtid, str) or not _GTID.match(gtid):
        raise HttpError(422, "invalid_request", "gtid must be a transaction id the coordinator gave")
    participant = request.config_dict[PARTICIPANT]
    async with participant.branch(gtid) as batch:
        if not isinstance(messages, list):
            raise PayloadError(f'"messages" must be a list, not {type(messages).__name__}')
        batch.extend(messages)
        batch.offsets = offsets
    return json_response({"gtid": gtid, "branch": participant.name, "messages": len(messages), "vote": "yes"}, 201)


async def _read(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise HttpError(400, "invalid_request", "limit must be an integer") from None
    if not 0 < limit <= _MAX_READ:
        raise HttpError(400, "invalid_request", f"limit must be between 1 and {_MAX_READ}")
    resource = request.config_dict[RESOURCE]
    try:
        found = await read_committed(resource.settings.bootstrap_servers, [topic])
    except RuntimeError as exc:
        raise HttpError(404, "not_found", str(exc)) from None
    return json_response(
        {
            "messages": [
                {
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": _show(m.key),
                    "value": _show(m.value),
                    "headers": [[name, _show(value)] for name, value in m.headers],
                }
                for m in found[:limit]
            ]
        }
    )


def _show(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode()}


def run(
    name: str,
    host: str,
    port: int,
    bootstrap: str,
    coordinator_url: str | Sequence[str],
    secret: str,
    data_dir: str | Path,
    inquiry_interval: float = 5.0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    coordinator_ssl: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    metrics: bool = True,
    **kafka_options: Any,
) -> None:
    """Serve the events participant until SIGINT or SIGTERM (``coordinator_url``: one URL,
    or every replica's), over HTTPS with ``ssl_context``."""
    app = build_app(
        name,
        bootstrap,
        coordinator_url,
        secret,
        data_dir,
        inquiry_interval,
        coordinator_ssl=coordinator_ssl,
        metrics=metrics,
        **kafka_options,
    )
    scheme = "https" if ssl_context else "http"

    def listening(*_args: object, **_kwargs: object) -> None:
        logger.info("listening", participant=name, url=f"{scheme}://{host}:{port}", bootstrap=bootstrap)

    run_service(app, host, port, print=listening, ssl_context=ssl_context, limits=limits)
