"""An in-process coordinator against stub participants whose behaviour a test sets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import build_app
from coordinator.config import Settings
from twopc_core.protocol import AbortRequest, CommitRequest, PrepareRequest, StatusRequest
from twopc_core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from twopc_core.tokens import new_token, token_hash

SECRET = "test-secret"

#: The harness's tokens by name, with their roles: ``tester`` (every role) is what
#: :meth:`Harness.call` sends unless a test passes its own headers.
TOKEN_ROLES = {
    "tester": ["client", "operator"],
    "client-a": ["client"],
    "client-b": ["client"],
    "reader": ["reader"],
    "operator": ["operator"],
}
TOKENS = {name: new_token() for name in TOKEN_ROLES}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


_MESSAGES = {"prepare": PrepareRequest, "commit": CommitRequest, "abort": AbortRequest, "status": StatusRequest}


@dataclass
class StubParticipant:
    """Answers the participant protocol the way a test tells it to, and records the calls."""

    name: str
    #: Where a test server serves it, once it runs.
    url: str = ""
    vote: str = "yes"
    #: "json" (the protocol), "garbage" (200 with a body that is not the protocol), "hang",
    #: "hang_commit" (votes, then never answers phase 2), "hang_prepare" (never votes).
    mode: str = "json"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    committed: set[str] = field(default_factory=set)
    aborted: set[str] = field(default_factory=set)
    #: gtids answered only once their event is set.
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    #: gtids this participant never answers.
    hang_for: set[str] = field(default_factory=set)
    #: gtids this participant votes no for, whatever ``vote`` says.
    no_for: set[str] = field(default_factory=set)
    #: gtids whose status this participant reports as prepared.
    prepared_for: set[str] = field(default_factory=set)
    #: gtids this participant answers with a protocol error.
    error_for: set[str] = field(default_factory=set)
    #: gtids an operator forced here to an outcome, which phase 2 then hears (heuristic).
    forced: dict[str, str] = field(default_factory=dict)
    #: Answer batches op by op (NDJSON) when asked to, like the SDK; else all at once.
    stream: bool = True
    #: Sizes of the batch exchanges received.
    batches: list[int] = field(default_factory=list)

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == op]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twopc/{op}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        raw = await request.read()
        verify(SECRET, op, raw, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER))
        self.headers.append(dict(request.headers))
        body = orjson.loads(raw)
        if self.mode == "garbage" and op in ("prepare", "commit", "batch"):
            return web.Response(text="<html>surprise</html>", content_type="text/html")
        if op == "batch":
            self.batches.append(len(body["ops"]))
            answers = [asyncio.ensure_future(self._answer(o.pop("op"), o)) for o in body["ops"]]
            if not (self.stream and "application/x-ndjson" in request.headers.get("Accept", "")):
                return web.json_response({"results": await asyncio.gather(*answers)})
            # Op by op, as each is done (what the SDK does).
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)

            async def indexed(i: int, answer: asyncio.Future[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
                return i, await answer

            for done in asyncio.as_completed([indexed(i, a) for i, a in enumerate(answers)]):
                index, result = await done
                await response.write(orjson.dumps({"index": index, "result": result}) + b"\n")
            await response.write_eof()
            return response
        answer = await self._answer(op, body)
        return web.json_response(answer, status=409 if "error" in answer else 200)

    async def _answer(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        # What the coordinator sent is the protocol (a batch's op may carry its trace context).
        _MESSAGES[op].model_validate({k: v for k, v in body.items() if k != "traceparent"})
        self.calls.append((op, body))
        hangs = (self.mode, op) in (("hang_commit", "commit"), ("hang_prepare", "prepare"))
        if body["gtid"] in self.gates:
            await self.gates[body["gtid"]].wait()
        if self.mode == "hang" or hangs or body["gtid"] in self.hang_for:
            await asyncio.Event().wait()
        gtid = body["gtid"]
        if gtid in self.error_for:
            return {"error": {"code": "boom", "message": "stub error"}}
        if op in ("commit", "abort") and gtid in self.forced:
            return {"status": self.forced[gtid], "reason": "forced by an operator", "heuristic": True}
        if op == "prepare":
            if self.vote == "no" or gtid in self.no_for:
                self.aborted.add(gtid)
                return {"vote": "no", "reason": "stub says no"}
            return {"vote": self.vote}
        if op == "commit":
            if body.get("one_phase") and self.vote == "no":
                return {"status": "aborted", "reason": "stub says no"}
            self.committed.add(gtid)
            return {"status": "committed"}
        if op == "abort":
            self.aborted.add(gtid)
            return {"status": "aborted"}
        if op == "status":
            status = "committed" if gtid in self.committed else "aborted" if gtid in self.aborted else "unknown"
            if status == "unknown" and gtid in self.prepared_for:
                status = "prepared"
            return {"status": status}
        return {"error": {"code": "unknown_op", "message": op}}


@dataclass
class Harness:
    client: TestClient
    participants: dict[str, StubParticipant]

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.request(method, path, **kwargs)
        text = await response.text()
        assert response.content_type == "application/json", f"{method} {path} answered {response.content_type}"
        return response.status, orjson.loads(text)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def running_harness(tmp_path: Path, **settings: Any) -> AsyncIterator[Harness]:
    """A coordinator app over two stub participants; ``settings`` add to the test's own."""
    stubs = {name: StubParticipant(name) for name in ("p1", "p2")}
    servers = {name: TestServer(stub.app()) for name, stub in stubs.items()}
    for server in servers.values():
        await server.start_server()
    settings = Settings(
        log={"path": tmp_path / "coordinator.db"},
        transactions={
            "prepare_timeout_ms": 500,
            "phase_two_timeout_ms": 300,
            "commit_wait_ms": 1000,
            "retry_base_ms": 10,
            "retry_cap_ms": 50,
        },
        participants=[
            {"name": name, "url": str(server.make_url("/twopc")), "secret": SECRET} for name, server in servers.items()
        ],
        server={"max_body_bytes": 4096},
        auth={"tokens": [{"name": n, "sha256": token_hash(TOKENS[n]), "roles": r} for n, r in TOKEN_ROLES.items()]},
        **settings,
    )
    client = TestClient(TestServer(build_app(settings)), headers=bearer("tester"))
    await client.start_server()
    try:
        yield Harness(client, stubs)
    finally:
        await client.close()
        for server in servers.values():
            await server.close()
