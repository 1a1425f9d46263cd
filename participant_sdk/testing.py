"""Tools for testing participants: an in-memory resource, a stub coordinator that
answers in-doubt inquiries, and signed protocol calls."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from participant_sdk.resource import PrepareResult, Resource
from twopc_core.http import error_body
from twopc_core.protocol import Vote
from twopc_core.signing import signed_headers

__all__ = ["InMemoryResource", "StubCoordinator", "call_participant"]


class InMemoryResource(Resource):
    """A resource that keeps branches in dicts and records every call.

    Steer it from a test: ``vote``/``reason`` set the next votes, ``errors[op]``
    makes ``op`` ("prepare", "commit", "abort", "recover") raise, and ``gate``, when
    set, holds every prepare until the event is set. The state is plain Python, so
    handing the same instance to a new participant simulates a durable resource
    surviving a restart.
    """

    def __init__(self, vote: Vote = Vote.YES, reason: str | None = None) -> None:
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


class StubCoordinator:
    """Answers ``GET /v1/transactions/{gtid}`` the way a test says, and nothing else.

    ``decide(gtid, "committed" | "aborted" | None, branches=None)`` sets the outcome
    (``None`` is undecided) and, if given, the branch names the view lists (a real
    coordinator always lists them; a participant whose branch is missing from a
    committed view aborts it). A gtid never decided is answered 404, as by a
    coordinator that has no record of it. ``unavailable = True`` answers 503 to everything.
    ``POST /v1/transactions/{gtid}/participants`` (an early-prepared branch enlisting)
    is recorded in ``enlisted``, or answered 409 for a gtid in ``refuse_enlist``.
    ``inquiries`` lists the gtids asked about, in order.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, str | None] = {}
        self.branches: dict[str, list[str]] = {}
        self.enlisted: dict[str, list[dict[str, Any]]] = {}
        self.refuse_enlist: set[str] = set()
        self.unavailable = False
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

    async def _enlist(self, request: web.Request) -> web.Response:
        gtid = request.match_info["gtid"]
        if self.unavailable:
            return _json(error_body("not_ready", "stub unavailable"), 503)
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
