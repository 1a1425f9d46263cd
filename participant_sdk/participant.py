"""The participant: a resource, its log, the protocol app and the in-doubt loop, wired.

Building one::

    participant = Participant(
        name="queue-a", resource=resource, secret=secret,
        coordinator_url="http://127.0.0.1:7070", log_path="var/a.db",
    )

or from settings read from the environment (``TWOPC_PARTICIPANT_NAME``, ...)::

    participant = Participant.from_settings(ParticipantSettings(), resource=resource)

Every value is checked there, before anything starts: a wrong one raises
:class:`~participant_sdk.settings.ParticipantConfigError` naming it. Mounting it in an
aiohttp service::

    app = web.Application()
    app.add_subapp("/twopc", participant.app())   # starts and stops with ``app``

or in FastAPI or Starlette (the same protocol, see :meth:`Participant.asgi`)::

    app = FastAPI(lifespan=participant.lifespan)
    app.mount("/twopc", participant.asgi())

With several coordinator replicas, give every one's URL (a list instead of the one
string): the participant asks the next one when one does not answer.

``app()`` hooks :meth:`Participant.start` and :meth:`Participant.close` into the
application's start-up and clean-up; pass ``manage_lifecycle=False`` to call them
yourself (or use ``async with participant:``).

Early prepare, for a resource that supports it (:meth:`Resource.branch`)::

    async with participant.branch(gtid) as conn:   # the branch's work, done here
        await conn.execute("UPDATE ...")
    # prepared, logged as voted YES and enlisted with the coordinator
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from participant_sdk import _branch as rules
from participant_sdk._asgi import ProtocolASGI
from participant_sdk._core import BatchResult, BranchHandler
from participant_sdk._edge import MAX_BODY_BYTES, ProtocolEdge
from participant_sdk._http import protocol_app
from participant_sdk._metrics import ParticipantMetrics
from participant_sdk._recovery import InDoubtResolver, InquiryRound
from participant_sdk._rejections import RejectionLog
from participant_sdk.client import CoordinatorClient, CoordinatorError, describe_failure
from participant_sdk.log import ParticipantLog
from participant_sdk.resource import Resource
from participant_sdk.settings import ParticipantConfigError, ParticipantFields, validated_settings
from twopc_core import failpoints
from twopc_core.http import Middleware
from twopc_core.metrics import metrics_handler
from twopc_core.protocol import (
    AbortRequest,
    BatchOp,
    CommitRequest,
    Outcome,
    OutcomeResponse,
    PrepareRequest,
    PrepareResponse,
    StatusRequest,
    StatusResponse,
)

__all__ = ["Participant"]

logger = structlog.get_logger("participant_sdk")

#: A batch slot not answered (yet); every slot is answered before :meth:`Participant.batch` returns.
_NOT_RUN = RuntimeError("not run")


class Participant:
    """A participant in global transactions, around one :class:`Resource`.

    Every argument is a keyword (or comes from :meth:`from_settings`), checked here: a
    wrong value raises :class:`~participant_sdk.settings.ParticipantConfigError` naming it.
    ``name``: as the coordinator registers it (each branch here is named after it).
    ``secret``: what the coordinator signs its calls with, and this participant its own.
    ``log_path``: the participant log (SQLite), kept across restarts.
    ``coordinator_url``: the coordinator's base URL, or every replica's (a sequence, or
    one string of comma-separated URLs); inquiries and early-prepare enlistments go to
    the replicas in turn until one answers (see :class:`CoordinatorClient`).
    ``inquiry_interval``: how long a prepared branch waits for phase 2 before asking
    the coordinator, and how often the in-doubt loop runs. ``retention``: how long a
    finished branch is remembered (a repeated call within it answers as the first); the
    log keeps the last minute of it in memory and the rest on disk only.
    ``sweep_interval``: how often the resource is asked again for the branches it
    holds prepared (as at start), to find any the log does not know.
    ``clock`` (unix seconds) is used for the log and for signature freshness.
    ``coordinator_ssl``: the TLS of an ``https://`` coordinator (whom to trust, what
    client certificate to show; see :func:`twopc_core.tls.client_context`), for the
    participant's own client; None trusts the system's CAs.
    ``metrics``: observe the latency histograms (the counts and gauges are kept
    either way); a service serves them with :meth:`metrics_handler`.
    """

    def __init__(
        self,
        *,
        name: str,
        resource: Resource,
        secret: str,
        coordinator_url: str | Sequence[str],
        log_path: str | Path,
        inquiry_interval: float = 5.0,
        retention: float = 3600.0,
        clock: Callable[[], float] = time.time,
        tracer_provider: trace.TracerProvider | None = None,
        session: aiohttp.ClientSession | None = None,
        inquiry_timeout: float = 10.0,
        sweep_interval: float = 60.0,
        coordinator_ssl: ssl.SSLContext | None = None,
        metrics: bool = True,
    ) -> None:
        # Keywords only: five values, four of them strings, are too easy to swap.
        settings = validated_settings(
            {
                "name": name,
                "secret": secret,
                "coordinator_url": coordinator_url,
                "log_path": log_path,
                "inquiry_interval": inquiry_interval,
                "inquiry_timeout": inquiry_timeout,
                "retention": retention,
                "sweep_interval": sweep_interval,
                "metrics": metrics,
            }
        )
        if not isinstance(resource, Resource):
            raise ParticipantConfigError(
                f"invalid participant settings: resource: must be a participant_sdk.Resource, not {resource!r}"
            )
        if resource.holds_branch_state and type(resource).branch_status is Resource.branch_status:
            raise ParticipantConfigError(
                f"invalid participant settings: resource: {type(resource).__name__} says it holds its "
                "branches' state (holds_branch_state) but does not implement branch_status()"
            )
        #: The settings it runs with, validated.
        self.settings = settings
        self.name = name = settings.name
        self.resource = resource
        self.inquiry_interval = settings.inquiry_interval
        self.retention = settings.retention
        self.sweep_interval = settings.sweep_interval
        self._secret = settings.secret.get_secret_value()
        self._clock = clock
        self._tracer = trace.get_tracer("participant_sdk", tracer_provider=tracer_provider)
        self.log = ParticipantLog(settings.log_path, clock=clock)
        self._metrics = ParticipantMetrics(name, enabled=settings.metrics)
        self._handler = BranchHandler(resource, self.log, self._metrics)
        # Its calls are signed with its secret: the coordinator tells it only of its own branches.
        self._client = CoordinatorClient(
            settings.coordinator_url,
            session,
            timeout=settings.inquiry_timeout,
            sign_as=(name, self._secret),
            ssl=coordinator_ssl,
        )
        #: The coordinator replicas' base URLs, in the order given.
        self.coordinator_urls = self._client.urls
        self._rejections = RejectionLog(name)
        self._resolver = InDoubtResolver(
            self._handler,
            self._client,
            self.inquiry_interval,
            after_round=self._housekeeping,
            rejections=self._rejections,
        )
        self._metrics.watch(self.log, lambda: self._resolver.rounds, clock)
        self._loop_task: asyncio.Task[None] | None = None
        self._failpoints_task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._last_sweep = 0.0
        self._started = False

    @classmethod
    def from_settings(
        cls,
        settings: ParticipantFields,
        *,
        resource: Resource,
        clock: Callable[[], float] = time.time,
        tracer_provider: trace.TracerProvider | None = None,
        session: aiohttp.ClientSession | None = None,
        coordinator_ssl: ssl.SSLContext | None = None,
    ) -> Participant:
        """A participant configured by ``settings`` (see :class:`ParticipantSettings`,
        which a service may read from the ``TWOPC_PARTICIPANT_*`` environment)."""
        return cls(
            name=settings.name,
            resource=resource,
            secret=settings.secret.get_secret_value(),
            coordinator_url=settings.coordinator_url,
            log_path=settings.log_path,
            inquiry_interval=settings.inquiry_interval,
            retention=settings.retention,
            inquiry_timeout=settings.inquiry_timeout,
            sweep_interval=settings.sweep_interval,
            metrics=settings.metrics,
            clock=clock,
            tracer_provider=tracer_provider,
            session=session,
            coordinator_ssl=coordinator_ssl,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the resource, load the log, reconcile them, start the in-doubt loop."""
        if self._started:
            raise RuntimeError(f"participant {self.name} is already started")
        await self.resource.start()
        try:
            await self.log.open()
            try:
                adopted = await self._handler.reconcile()
            except BaseException:
                await self.log.close()
                raise
        except BaseException:
            await self.resource.close()  # a start that fails leaves nothing open behind it
            raise
        self._started = True
        self._last_prune = self._last_sweep = self._clock()
        self._loop_task = asyncio.create_task(self._resolver.run(), name=f"in-doubt:{self.name}")
        self._failpoints_task = asyncio.create_task(failpoints.watch_file(), name="failpoints-file")
        in_doubt = self.in_doubt_count
        logger.info(
            "participant started",
            participant=self.name,
            coordinator=",".join(self.coordinator_urls),
            # Prepared here, not yet told the outcome: the in-doubt loop asks about them now.
            in_doubt_branches=in_doubt,
            # Of those, found prepared at the resource but missing from the log (after a crash).
            adopted_from_resource=adopted,
            # Finished recently: kept in memory to answer a repeated call as the first.
            finished_branches_remembered=len(self.log) - in_doubt,
        )

    async def close(self) -> None:
        """Stop the in-doubt loop, write what is queued, close the log and the resource."""
        if not self._started:
            return
        self._started = False
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._failpoints_task is not None:
            self._failpoints_task.cancel()
            self._failpoints_task = None
        await self.log.close()
        await self.resource.close()
        await self._client.close()

    async def __aenter__(self) -> Participant:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def app(
        self,
        *,
        middlewares: Iterable[Middleware] = (),
        manage_lifecycle: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> web.Application:
        """The protocol as an aiohttp application, to mount with ``add_subapp``.

        ``middlewares`` wrap the protocol handlers, inside the SDK's error edge: they
        see every request and every answer a handler returns, while an error passes
        through them as an exception that the edge answers as JSON. A request body over
        ``max_body_bytes`` is answered 413 (JSON), whatever the embedding application takes.
        """
        app = protocol_app(self._edge(max_body_bytes), middlewares)
        if manage_lifecycle:
            app.cleanup_ctx.append(self._lifecycle)
        return app

    def asgi(self, *, max_body_bytes: int = MAX_BODY_BYTES, manage_lifecycle: bool = False) -> ProtocolASGI:
        """The protocol as an ASGI application, for FastAPI, Starlette or any ASGI server::

            app = FastAPI(lifespan=participant.lifespan)
            app.mount("/twopc", participant.asgi())

        The same protocol as :meth:`app` (one implementation behind both). A mounted
        application hears no lifespan events, so the embedding application starts and
        stops the participant (``lifespan=participant.lifespan``, or ``async with
        participant`` inside its own lifespan); ``manage_lifecycle=True`` when this
        application is served on its own. A body over ``max_body_bytes`` is a 413.
        """
        return ProtocolASGI(self._edge(max_body_bytes), self.lifespan if manage_lifecycle else None)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Started inside, closed after: an ASGI application's lifespan
        (``FastAPI(lifespan=participant.lifespan)``, ``Starlette(lifespan=...)``)."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    def _edge(self, max_body_bytes: int) -> ProtocolEdge:
        return ProtocolEdge(self._handler, self._secret, self._clock, self._tracer, max_body_bytes, self._rejections)

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The registry of this participant's metrics: an adapter registers its own in
        it, and :meth:`metrics_handler` serves it."""
        return self._metrics.registry

    def metrics_handler(self) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler answering with the metrics (``app.router.add_get("/metrics", ...)``)."""
        return metrics_handler(self._metrics.registry)

    async def _lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    # -- the protocol, callable without HTTP -----------------------------------------

    async def prepare(self, request: PrepareRequest) -> PrepareResponse:
        return await self._handler.prepare(request)

    async def commit(self, request: CommitRequest) -> OutcomeResponse:
        return await self._handler.commit(request)

    async def abort(self, request: AbortRequest) -> OutcomeResponse:
        return await self._handler.abort(request)

    async def status(self, request: StatusRequest) -> StatusResponse:
        return await self._handler.status(request)

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchResult]:
        """Each op's answer, in order, or the exception it failed with (see ``/batch``)."""
        results: list[BatchResult] = [_NOT_RUN] * len(ops)

        def settle(index: int, result: BatchResult) -> None:
            results[index] = result

        await self._handler.batch(ops, settle)
        return results

    # -- early prepare ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def branch(self, gtid: str, *, enlist: bool = True) -> AsyncIterator[Any]:
        """Do this participant's branch of ``gtid`` here and now (early prepare).

        Yields what the resource offers to work with (see :meth:`Resource.branch`).
        On a clean exit the branch is prepared, logged as voted YES and, unless
        ``enlist=False``, enlisted with the coordinator as already prepared; on an
        exception the work is dropped and the exception propagates.

        Raises :class:`~participant_sdk.errors.BranchExists` if this participant
        already knows the branch. If the coordinator refuses the enlistment (unknown or
        finished transaction, unknown participant), the branch is aborted here and
        :class:`~participant_sdk.errors.EnlistRefused` is raised. The enlistment goes to
        the coordinator's replicas in turn until one answers; if none can be reached
        (:class:`~participant_sdk.errors.CoordinatorUnreachable`) or the last one tried
        answers another error (:class:`~participant_sdk.errors.EnlistFailed`), the
        branch stays prepared and the in-doubt loop settles it (it aborts unless the
        coordinator committed the transaction with this branch in it). All of them are
        :class:`~participant_sdk.errors.ParticipantError`.
        """
        async with self._handler.early_branch(gtid, self.name) as handle:
            yield handle
        if enlist:
            await self._enlist_prepared(gtid)

    async def _enlist_prepared(self, gtid: str) -> None:
        try:
            await self._client.enlist(gtid, self.name, prepared=True)
        except CoordinatorError as exc:
            if exc.status in (401, 403):  # a secret or a name the coordinator does not accept
                self._rejections.refused(
                    "coordinator refused the participant's enlistment", f"{exc.code}: {exc.message}", gtid=gtid
                )
            if not rules.enlistment_refused(exc.status):
                raise rules.enlist_failed(gtid, self.name, describe_failure(exc)) from exc
            await self._handler.resolve(gtid, self.name, Outcome.ABORTED)
            raise rules.enlist_refused(gtid, self.name, exc.code, exc.message) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise rules.coordinator_unreachable(gtid, self.name, describe_failure(exc)) from exc

    # -- in doubt --------------------------------------------------------------------

    @property
    def in_doubt_count(self) -> int:
        """Branches prepared here that have not heard their outcome yet."""
        return self.log.in_doubt_count

    @property
    def inquiry_rounds(self) -> int:
        """Rounds the background in-doubt loop has finished since start."""
        return self._resolver.rounds

    def in_doubt(self) -> list[tuple[str, str]]:
        return [row.key for row in self.log.prepared()]

    async def resolve_in_doubt(self, min_age: float = 0.0) -> InquiryRound:
        """Run one round of inquiries now, about branches prepared ``min_age`` seconds
        ago or earlier (by default all of them)."""
        return await self._resolver.round(min_age)

    async def force_outcome(self, gtid: str, branch: str, outcome: Outcome | str) -> None:
        """An operator's heuristic decision for an in-doubt branch.

        Recorded as heuristic: ``status`` reports it, and a coordinator decision that
        differs is answered with what was done here so the coordinator can report it.
        Raises :class:`~participant_sdk.errors.NotInDoubt` for a branch not prepared here.
        """
        await self._handler.force(gtid, branch, Outcome(outcome))

    # -- retention -------------------------------------------------------------------

    async def prune(self) -> int:
        """Forget finished branches older than the retention; return how many."""
        self._last_prune = self._clock()
        return await self.log.forget_finished(self._clock() - self.retention)

    async def sweep(self) -> int:
        """Ask the resource now for the branches it holds prepared, log those the log
        does not know (the in-doubt loop then asks about them) and re-apply logged
        outcomes it still holds; return how many unknown branches were found."""
        self._last_sweep = self._clock()
        found = await self._handler.reconcile()
        if found:
            logger.warning("prepared branches found that the log did not know", count=found)
        return found

    async def _housekeeping(self) -> None:
        # Pruning deletes on disk: every tenth of the retention is often enough.
        if self._clock() - self._last_prune >= min(self.retention / 10, 600.0):
            forgotten = await self.prune()
            if forgotten:
                logger.debug("finished branches forgotten", count=forgotten)
        if self._clock() - self._last_sweep >= self.sweep_interval:
            await self.sweep()
