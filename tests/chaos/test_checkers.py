"""The checkers find what they are for: each is shown a history that breaks its
invariant, and one that keeps it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from chaos.checkers import check
from chaos.workload import Txn


@dataclass
class StubParticipant:
    """What the checkers read of a participant: its effects, and which transactions each
    tag's work came from."""

    name: str
    counted: Counter[str]
    by_tag: dict[str, set[str]] = field(default_factory=dict)
    effects_key: str = "gtid"

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        return self.counted

    async def gtids_by_tag(self, http: aiohttp.ClientSession) -> dict[str, set[str]]:
        return self.by_tag

    async def violations(self, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
        return []


@dataclass
class StubTopology:
    participants: dict[str, StubParticipant]
    coordinator_urls: list[str]
    tokens: dict[str, str] = field(default_factory=lambda: {"reader": "stub-reader", "client": "stub-client"})


@asynccontextmanager
async def replica(outcomes: dict[str, str]) -> AsyncIterator[str]:
    """A coordinator replica that knows these outcomes (anything else: 404)."""

    async def get(request: web.Request) -> web.Response:
        gtid = request.match_info["gtid"]
        if gtid not in outcomes:
            return web.json_response({"error": {"code": "not_found", "message": gtid}}, status=404)
        return web.json_response({"gtid": gtid, "state": outcomes[gtid], "outcome": outcomes[gtid]})

    app = web.Application()
    app.router.add_get("/v1/transactions/{gtid}", get)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def txn(tag: str, gtid: str, outcome: str = "committed", gtids: set[str] | None = None) -> Txn:
    return Txn(tag, gtid, outcome, 0.0, 1.0, key=f"key-{tag}", gtids=gtids or {gtid})


async def violations(
    history: list[Txn],
    outcomes: list[dict[str, str]],
    effects: Counter[str],
    by_tag: dict[str, set[str]] | None = None,
) -> list[str]:
    async with replica(outcomes[0]) as first, replica(outcomes[1]) as second, aiohttp.ClientSession() as http:
        topology = StubTopology({"q": StubParticipant("q", effects, by_tag or {})}, [first, second])
        result = await check(topology, http, history, ["one_outcome", "one_transaction_per_key"])  # type: ignore[arg-type]
        return result.violations


def only(prefix: str) -> Callable[[list[str]], list[str]]:
    return lambda found: [v for v in found if v.startswith(prefix)]


async def test_replicas_that_agree_with_the_effects_break_nothing() -> None:
    history = [txn("t1", "g1"), txn("t2", "g2", "aborted")]
    agreed: dict[str, str] = {"g1": "committed", "g2": "aborted"}
    assert await violations(history, [agreed, agreed], Counter({"g1": 1}), {"t1": {"g1"}}) == []


async def test_replicas_that_disagree_on_an_outcome_are_a_violation() -> None:
    history = [txn("t1", "g1")]
    found = await violations(history, [{"g1": "committed"}, {"g1": "aborted"}], Counter({"g1": 1}))
    assert len(only("one_outcome: g1: the replicas disagree")(found)) == 1


async def test_a_commit_the_participants_never_saw_is_a_violation() -> None:
    history = [txn("t1", "g1", "unknown")]
    found = await violations(history, [{"g1": "committed"}, {"g1": "committed"}], Counter())
    assert only("one_outcome")(found) == [
        "one_outcome: g1 is committed at the coordinators but not at every participant"
    ]


async def test_work_of_a_transaction_with_no_record_anywhere_is_a_violation() -> None:
    # No record at any replica means presumed abort: nothing may have taken effect.
    history = [txn("t1", "g1", "unknown")]
    found = await violations(history, [{}, {}], Counter({"g1": 1}))
    assert only("one_outcome")(found) == ["one_outcome: g1 is aborted at the coordinators but took effect"]


async def test_one_key_that_began_two_transactions_is_a_violation() -> None:
    history = [txn("t1", "g1", gtids={"g1", "g2"})]
    agreed = {"g1": "committed", "g2": "aborted"}
    found = await violations(history, [agreed, agreed], Counter({"g1": 1}))
    assert only("one_transaction_per_key")(found) == [
        "one_transaction_per_key: Idempotency-Key key-t1 began ['g1', 'g2']"
    ]


async def test_one_tags_work_from_two_transactions_is_a_violation() -> None:
    history = [txn("t1", "g1"), txn("t2", "g2")]
    agreed = {"g1": "committed", "g2": "committed"}
    found = await violations(history, [agreed, agreed], Counter({"g1": 1, "g2": 1}), {"t1": {"g1", "g2"}})
    assert only("one_transaction_per_key")(found) == [
        "one_transaction_per_key: the work of t1 came to q from ['g1', 'g2']"
    ]
