"""Tools for testing participants: a participant on a test server, an in-memory
resource, a stub coordinator that answers in-doubt inquiries, and signed protocol calls.

A test of a service that embeds a participant, against a stub coordinator::

    stub = StubCoordinator()              # serve stub.app() on a TestServer of its own
    server = ParticipantTestServer(
        lambda **options: build_app("queue-a", data_dir, stub_url, SECRET, **options),
        "queue-a",
        SECRET,
        participant_key=PARTICIPANT,      # where the app keeps its Participant
    )
    async with server:
        assert (await server.prepare("g1", {"items": ["x"]}))[0] == 200
        await server.restart()            # the same data directory, as after a crash
        assert await server.status("g1") == "prepared"

``mount="asgi"`` serves a bare participant's :meth:`Participant.asgi` instead, mounted
under the prefix in a Starlette application on uvicorn (the ``asgi`` extra), with the
same shortcuts: a test runs against either mount unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from participant_sdk.resource import PrepareResult, Resource
from twopc_core.http import error_body
from twopc_core.protocol import BranchStatus, Vote
from twopc_core.signing import signed_headers
from twopc_core.testing import wait_until

if TYPE_CHECKING:
    from participant_sdk.participant import Participant

__all__ = ["InMemoryResource", "ParticipantTestServer", "StubCoordinator", "call_participant"]


class InMemoryResource(Resource):
    """A resource that keeps branches in dicts and records every call.

    Steer it from a test: ``vote``/``reason`` set the next votes, ``errors[op]``
    makes ``op`` ("prepare", "commit", "abort", "recover") raise, and ``gate``, when
    set, holds every prepare until the event is set. The state is plain Python, so
    handing the same instance to a new participant simulates a durable resource
    surviving a restart. ``holds_branch_state=True`` makes it answer
    :meth:`branch_status` from those dicts and the participant rely on it, as a
    resource that holds its branches' state does (the mock queue, PostgreSQL, Kafka).
    """

    def __init__(self, vote: Vote = Vote.YES, reason: str | None = None, *, holds_branch_state: bool = False) -> None:
        self.holds_branch_state = holds_branch_state
        self.vote = vote
        self.reason = reason
        self.errors: dict[str, BaseException] = {}
        self.gate: asyncio.Event | None = None
        self.prepared: dict[tuple[str, str], Any] = {}
        self.committed: dict[tuple[str, str], Any] = {}
        self.aborted: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, str]] = []
        self.started = False
        self.closed = False

    def calls_of(self, op: str) -> list[tuple[str, str]]:
        return [(gtid, branch) for name, gtid, branch in self.calls if name == op]

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def _maybe_fail(self, op: str) -> None:
        error = self.errors.get(op)
        if error is not None:
            raise error

    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        self.calls.append(("prepare", gtid, branch))
        if self.gate is not None:
            await self.gate.wait()
        self._maybe_fail("prepare")
        if self.vote is Vote.YES:
            self.prepared[(gtid, branch)] = payload
        return PrepareResult(self.vote, self.reason)

    async def commit(self, gtid: str, branch: str) -> None:
        self.calls.append(("commit", gtid, branch))
        self._maybe_fail("commit")
        key = (gtid, branch)
        if key in self.prepared:
            self.committed[key] = self.prepared.pop(key)

    async def abort(self, gtid: str, branch: str) -> None:
        self.calls.append(("abort", gtid, branch))
        self._maybe_fail("abort")
        key = (gtid, branch)
        self.prepared.pop(key, None)
        if key not in self.committed:  # aborting a committed branch changes nothing
            self.aborted.add(key)

    async def recover(self) -> list[tuple[str, str]]:
        self._maybe_fail("recover")
        return list(self.prepared)

    async def branch_status(self, gtid: str, branch: str) -> BranchStatus:
        self.calls.append(("branch_status", gtid, branch))
        key = (gtid, branch)
        if key in self.prepared:
            return BranchStatus.PREPARED
        if key in self.committed:
            return BranchStatus.COMMITTED
        return BranchStatus.ABORTED if key in self.aborted else BranchStatus.UNKNOWN


async def call_participant(
    client: Any,
    url: str,
    operation: str,
    body: Any,
    secret: str,
    *,
    now: float | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST a signed protocol request as the coordinator would; return (status, JSON).

    ``client`` is anything with aiohttp's ``post(url, data=, headers=)``: a
    ``ClientSession`` with a full URL, or a test client with a path.
    """
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"Content-Type": "application/json", **signed_headers(secret, operation, data, now)}
    all_headers.update(headers or {})
    async with client.post(url, data=data, headers=all_headers) as response:
        raw = await response.read()
        try:
            return response.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return response.status, raw


class ParticipantTestServer:
    """A participant on a real local HTTP server, called as the coordinator calls it.

    ``factory(**options)`` builds what is served, afresh at every start: a whole
    service's application, whose :class:`Participant` is stored under the app key
    ``participant_key``, or a bare :class:`Participant`, served under ``prefix``.
    Whatever must outlive a restart (a log file, a data directory, a resource), the
    factory closes over; ``options`` and those given to :meth:`start` or
    :meth:`restart` are passed to it, and kept for the restarts after.

    :meth:`start` returns once the participant's first in-doubt round is over (it
    asks at once about every branch found prepared), so a test sees it settled; a
    restart keeps the address. ``name`` is the branch the shortcuts (:meth:`prepare`,
    :meth:`commit`, :meth:`abort`, :meth:`status`) act on unless told another;
    ``clock`` (unix seconds) signs the calls and dates each prepare's deadline,
    ``prepare_timeout`` seconds ahead. ``mount``: serve the participant's aiohttp
    sub-application, or (for a bare participant) its ASGI application (see the module).
    """

    def __init__(
        self,
        factory: Callable[..., web.Application | Participant],
        name: str,
        secret: str,
        *,
        participant_key: web.AppKey[Participant] | None = None,
        prefix: str = "/twopc",
        options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        prepare_timeout: float = 30.0,
        mount: Literal["aiohttp", "asgi"] = "aiohttp",
    ) -> None:
        if mount not in ("aiohttp", "asgi"):
            raise ValueError(f"mount is 'aiohttp' or 'asgi', not {mount!r}")
        self.factory = factory
        self.mount = mount
        self.name = name
        self.secret = secret
        self.participant_key = participant_key
        self.prefix = prefix.rstrip("/")
        self.options: dict[str, Any] = dict(options or {})
        self.clock = clock
        self.prepare_timeout = prepare_timeout
        self._client: TestClient[web.Request, web.Application] | None = None
        self._asgi: _AsgiServer | None = None
        self._participant: Participant | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, **options: Any) -> Self:
        """Build the app with the options so far and ``options``, serve it, and wait
        for the participant's first in-doubt round."""
        if self._client is not None or self._asgi is not None:
            raise RuntimeError(f"the test server of {self.name} is already started")
        self.options.update(options)
        if self.mount == "asgi":
            return await self._start_asgi()
        app, participant = self._build()
        client = TestClient(TestServer(app, port=self._port))
        try:
            await client.start_server()
            first_round = f"the first in-doubt round of {self.name}"
            await wait_until(lambda: participant.inquiry_rounds >= 1, message=first_round)
        except BaseException:
            await client.close()
            raise
        self._client, self._participant = client, participant
        self._port = client.port
        return self

    async def _start_asgi(self) -> Self:
        built = self.factory(**self.options)
        if isinstance(built, web.Application):
            raise TypeError("mount='asgi' serves a bare participant: the factory must build a Participant")
        server = _AsgiServer(built, self.prefix, self._port)
        await server.start()
        try:
            first_round = f"the first in-doubt round of {self.name}"
            await wait_until(lambda: built.inquiry_rounds >= 1, message=first_round)
        except BaseException:
            await server.stop()
            raise
        self._asgi, self._participant, self._port = server, built, server.port
        return self

    def _build(self) -> tuple[web.Application, Participant]:
        built = self.factory(**self.options)
        if not isinstance(built, web.Application):
            app = web.Application()
            app.add_subapp(self.prefix, built.app())
            return app, built
        if self.participant_key is None:
            raise TypeError("a factory that builds a whole application needs participant_key to find its participant")
        return built, built[self.participant_key]

    async def stop(self) -> None:
        """Stop serving; the app's clean-up (or lifespan) closes the participant (and its log)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        asgi, self._asgi = self._asgi, None
        if asgi is not None:
            await asgi.stop()

    async def restart(self, **options: Any) -> Self:
        """Stop, then start a new participant on the same data and at the same address."""
        await self.stop()
        return await self.start(**options)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what is running -------------------------------------------------------------

    @property
    def http(self) -> TestClient[web.Request, web.Application] | aiohttp.ClientSession:
        """The HTTP client of the running server: paths are relative to its root
        (``post``, ``get``, ``request`` as aiohttp's)."""
        if self._asgi is not None:
            return self._asgi.http
        if self._client is None:
            raise RuntimeError(f"the test server of {self.name} is not started")
        return self._client

    @property
    def app(self) -> web.Application:
        """The aiohttp application being served (not for ``mount="asgi"``)."""
        if self._client is None:
            raise RuntimeError(f"the test server of {self.name} serves no aiohttp application")
        return self._client.app

    @property
    def participant(self) -> Participant:
        """The participant of the last start (still there to look at after a stop)."""
        if self._participant is None:
            raise RuntimeError(f"the test server of {self.name} was never started")
        return self._participant

    @property
    def resource(self) -> Resource:
        """The participant's resource."""
        return self.participant.resource

    @property
    def url(self) -> str:
        """Where the protocol is served, as a coordinator would be told."""
        if self._asgi is not None:
            return f"http://127.0.0.1:{self._asgi.port}{self.prefix}"
        if self._client is None:
            raise RuntimeError(f"the test server of {self.name} is not started")
        return str(self._client.make_url(self.prefix))

    # -- protocol calls --------------------------------------------------------------

    async def call(
        self,
        operation: str,
        body: Any,
        *,
        secret: str | None = None,
        now: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST ``body`` (JSON-encoded unless bytes) to ``operation``, signed with the
        secret (or ``secret``) at ``now`` (the clock's time unless given); return the
        status and the decoded answer."""
        return await call_participant(
            self.http,
            f"{self.prefix}/{operation}",
            operation,
            body,
            self.secret if secret is None else secret,
            now=self.clock() if now is None else now,
            headers=headers,
        )

    async def prepare(self, gtid: str, payload: Any = None, *, branch: str | None = None) -> tuple[int, Any]:
        """Prepare a branch whose transaction's deadline is ``prepare_timeout`` ahead."""
        deadline = self.clock() + self.prepare_timeout
        body = {"gtid": gtid, "branch": branch or self.name, "payload": payload, "deadline": deadline}
        return await self.call("prepare", body)

    async def commit(self, gtid: str, *, branch: str | None = None, **fields: Any) -> tuple[int, Any]:
        """Commit a branch; ``fields`` join the body (``one_phase=True, payload=...``)."""
        return await self.call("commit", {"gtid": gtid, "branch": branch or self.name, **fields})

    async def abort(self, gtid: str, *, branch: str | None = None) -> tuple[int, Any]:
        """Abort a branch (prepared, or never heard of: a prepare after it votes no)."""
        return await self.call("abort", {"gtid": gtid, "branch": branch or self.name})

    async def status(self, gtid: str, *, branch: str | None = None) -> str:
        """The branch's status as the participant reports it (``"prepared"``, ...)."""
        status, body = await self.call("status", {"gtid": gtid, "branch": branch or self.name})
        if status != 200:
            raise AssertionError(f"status of {gtid} was answered {status}: {body!r}")
        return str(body["status"])


class _AsgiServer:
    """A participant's ASGI application mounted under ``prefix`` in Starlette, served by
    uvicorn in this event loop; the participant starts and stops with its lifespan."""

    def __init__(self, participant: Participant, prefix: str, port: int | None) -> None:
        # Imported here: only a test of the ASGI mount needs them (the asgi extra).
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app = Starlette(routes=[Mount(prefix, app=participant.asgi())], lifespan=participant.lifespan)
        config = uvicorn.Config(app, host="127.0.0.1", port=port or 0, lifespan="on", log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    async def start(self) -> None:
        server = self._server
        self._task = task = asyncio.create_task(server.serve(), name="uvicorn")
        await wait_until(lambda: server.started or task.done(), message="uvicorn serving")
        if not server.started:
            await task  # raises what stopped it
            raise RuntimeError("uvicorn stopped before serving (the participant did not start?)")
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{self.port}")

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the ASGI test server is not started")
        return self._session

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class StubCoordinator:
    """Answers ``GET /v1/transactions/{gtid}`` the way a test says, and nothing else.

    ``decide(gtid, "committed" | "aborted" | None, branches=None)`` sets the outcome
    (``None`` is undecided) and, if given, the branch names the view lists (a real
    coordinator always lists them; a participant whose branch is missing from a
    committed view aborts it). A gtid never decided is answered 404, as by a
    coordinator that has no record of it. ``unavailable = True`` answers 503 to everything;
    ``refuse_signature = "why"`` answers 401 ``invalid_signature`` with that message, as a
    coordinator that does not accept the participant's name or secret.
    ``POST /v1/transactions/{gtid}/participants`` (an early-prepared branch enlisting)
    is recorded in ``enlisted``, or answered 409 for a gtid in ``refuse_enlist``.
    ``inquiries`` lists the gtids asked about, in order. :meth:`serve` runs it on a
    local test server; several stubs, some stopped, stand for coordinator replicas.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, str | None] = {}
        self.branches: dict[str, list[str]] = {}
        self.enlisted: dict[str, list[dict[str, Any]]] = {}
        self.refuse_enlist: set[str] = set()
        self.unavailable = False
        self.refuse_signature: str | None = None
        self.inquiries: list[str] = []

    def decide(self, gtid: str, outcome: str | None, branches: list[str] | None = None) -> None:
        self.outcomes[gtid] = outcome
        if branches is not None:
            self.branches[gtid] = list(branches)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/transactions/{gtid}", self._get)
        app.router.add_post("/v1/transactions/{gtid}/participants", self._enlist)
        return app

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve the stub on a local test server until the block ends; yields its base
        URL (which refuses connections once the block has ended)."""
        server = TestServer(self.app())
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/")
        finally:
            await server.close()

    async def _enlist(self, request: web.Request) -> web.Response:
        gtid = request.match_info["gtid"]
        if self.unavailable:
            return _json(error_body("not_ready", "stub unavailable"), 503)
        if self.refuse_signature is not None:
            return _json(error_body("invalid_signature", self.refuse_signature), 401)
        if gtid in self.refuse_enlist:
            return _json(error_body("wrong_state", f"cannot enlist in {gtid}"), 409)
        body = orjson.loads(await request.read())
        self.enlisted.setdefault(gtid, []).append(body)
        return _json({"gtid": gtid, "state": "active", "outcome": None}, 201)

    async def _get(self, request: web.Request) -> web.Response:
        gtid = request.match_info["gtid"]
        self.inquiries.append(gtid)
        if self.unavailable:
            return _json(error_body("not_ready", "stub unavailable"), 503)
        if self.refuse_signature is not None:
            return _json(error_body("invalid_signature", self.refuse_signature), 401)
        if gtid not in self.outcomes:
            return _json(error_body("not_found", f"no transaction {gtid}"), 404)
        outcome = self.outcomes[gtid]
        state = {"committed": "committed", "aborted": "aborted"}.get(outcome or "", "preparing")
        view: dict[str, Any] = {"gtid": gtid, "state": state, "outcome": outcome}
        if gtid in self.branches:
            view["branches"] = [{"name": name} for name in self.branches[gtid]]
        return _json(view)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
