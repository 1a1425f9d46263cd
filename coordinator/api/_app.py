"""The coordinator's aiohttp application and its lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web

from coordinator.api._auth import auth_middleware
from coordinator.api._errors import coordinator_errors
from coordinator.api._forward import Forwarder
from coordinator.api._openapi import openapi_document
from coordinator.api._routes import STATE, ServiceState, routes
from coordinator.api._sessions import SESSIONS, Sessions
from coordinator.api._tracing import tracing_middleware
from coordinator.api._ui import page_errors, setup_templates, ui_routes
from coordinator.auth import Authenticator
from coordinator.config import Settings
from coordinator.engine import Coordinator, coordinator_families
from coordinator.log import DecisionLog, SQLiteLog
from coordinator.metrics import CoordinatorMetrics
from coordinator.transport import Backoff, Transport
from twopc_core import failpoints, telemetry
from twopc_core.metrics import ScrapeCollector

__all__ = ["build_app"]


def _open_log(settings: Settings) -> DecisionLog:
    if settings.log.store == "postgres":
        # Imported here: psycopg comes with the postgres extra, which SQLite does without.
        from coordinator.log import LogUnavailable

        try:
            from coordinator.log import PostgresLog
        except ImportError as exc:
            raise LogUnavailable(str(exc)) from exc
        assert settings.log.dsn is not None  # the settings refuse postgres without one
        return PostgresLog(
            settings.log.dsn,
            pool_size=settings.log.pool_size,
            unsafe_unfenced=settings.log.unsafe_unfenced_decisions,
        )
    return SQLiteLog(settings.log.path)


def build_app(settings: Settings, log_factory: Callable[[Settings], DecisionLog] = _open_log) -> web.Application:
    telemetry.ensure_tracing("twopc-coordinator")
    authenticator = Authenticator(settings.auth, {p.name: p.secret for p in settings.participants})
    sessions = Sessions(authenticator)
    app = web.Application(
        middlewares=[
            tracing_middleware,
            coordinator_errors,
            # Inside the JSON edge: the admin page's errors are HTML pages for a person.
            page_errors,
            auth_middleware(authenticator, sessions, public_metrics=settings.auth.public_metrics),
        ],
        client_max_size=settings.server.max_body_bytes,
    )
    state = app[STATE] = ServiceState()
    app[SESSIONS] = sessions
    app.add_routes(routes)
    app.add_routes(ui_routes)
    setup_templates(app)
    document = orjson.dumps(openapi_document([p.name for p in settings.participants]))

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/openapi.json", openapi, name="openapi")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        tx = settings.transactions
        log_store = log_factory(settings)
        await log_store.open()
        metrics = CoordinatorMetrics(enabled=settings.metrics.enabled)
        transport = Transport(
            settings.participants,
            Backoff(tx.retry_base_ms / 1000, tx.retry_cap_ms / 1000),
            phase_two_timeout=tx.phase_two_timeout_ms / 1000,
            metrics=metrics,
        )
        await transport.start()
        coordinator = Coordinator(
            settings.node_id,
            log_store,
            transport,
            tx,
            retention_seconds=settings.log.retention_seconds,
            prune_interval=settings.log.prune_interval_seconds,
            advertise_url=settings.advertise_url,
            lease=settings.cluster.lease_ms / 1000,
            metrics=metrics,
        )
        metrics.registry.register(ScrapeCollector(lambda: coordinator_families(coordinator)))
        try:
            await coordinator.start()
        except BaseException:
            await coordinator.close()
            await transport.close()
            await log_store.close()
            raise
        # A forwarded call may wait as long as a commit does at the replica it goes to.
        forwarder = Forwarder(
            settings.node_id,
            (tx.prepare_timeout_ms + tx.commit_wait_ms) / 1000 + 5.0,
            ssl_context=settings.cluster.client_ssl(),
        )
        watcher = asyncio.create_task(failpoints.watch_file(), name="failpoints-file")
        state.coordinator, state.forwarder = coordinator, forwarder
        state.ready = True  # recovery is scheduled: inquiries get the right answers
        yield
        state.ready = False
        watcher.cancel()
        await forwarder.close()
        await coordinator.close()
        await transport.close()
        await log_store.close()

    app.cleanup_ctx.append(lifecycle)
    return app
