"""The coordinator client across replicas: a call that gets no answer, or "try
elsewhere", goes to the next replica; the replica that answered is asked first next
time; begin and execute without an Idempotency-Key are not repeated elsewhere; when
every replica fails, the last failure is raised with what each said."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from participant_sdk.client import CoordinatorClient, CoordinatorError, describe_failure, parse_coordinator_urls

NOT_READY = (503, orjson.dumps({"error": {"code": "not_ready", "message": "no lease yet"}}))


#: What a replica of the test answers by default: valid as any of the client's answers
#: (a transaction, a begin, a page of transactions).
ANY_ANSWER = b'{"gtid": "g1", "state": "committed", "outcome": "committed", "transactions": []}'


class Replica:
    """A coordinator replica of the test: records each request, answers ``reply``."""

    def __init__(self, reply: tuple[int, bytes]) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {"method": request.method, "path": request.path, "idempotency_key": request.headers.get("Idempotency-Key")}
        )
        status, body = self.reply
        return web.Response(status=status, body=body, content_type="application/json")


class Replicas:
    """Replicas that answer, refuse connections, reset them or never answer; closed at the end."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._sockets: list[socket.socket] = []
        self._release = asyncio.Event()
        #: Connections the resetting and silent replicas accepted.
        self.accepted = 0

    async def answering(self, reply: tuple[int, bytes] = (200, ANY_ANSWER)) -> tuple[Replica, str]:
        replica = Replica(reply)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", replica.handle)
        server = TestServer(app)
        await server.start_server()
        self._closers.append(server.close)
        return replica, str(server.make_url("")).rstrip("/")

    def refusing(self) -> str:
        # Bound but not listening: a connection is refused, and no one else gets the port.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._sockets.append(sock)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def resetting(self) -> str:
        """Reads a request and drops the connection without an answer."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        return await self._raw(handle)

    async def silent(self) -> str:
        """Reads a request and never answers (until the test ends)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            await reader.readuntil(b"\r\n\r\n")
            await self._release.wait()
            writer.close()

        return await self._raw(handle)

    async def _raw(self, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> str:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)

        async def close() -> None:
            server.close()
            await server.wait_closed()

        self._closers.append(close)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self._release.set()
        for close in reversed(self._closers):
            await close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    found = Replicas()
    yield found
    await found.close()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., CoordinatorClient]]:
    made: list[CoordinatorClient] = []

    def make(urls: list[str], timeout: float = 5.0) -> CoordinatorClient:
        made.append(CoordinatorClient(urls, timeout=timeout))
        return made[-1]

    yield make
    for client in made:
        await client.close()


ClientFactory = Callable[..., CoordinatorClient]


# -- going on to the next replica ----------------------------------------------------------


async def test_a_call_goes_to_the_next_replica_when_one_refuses_connections(
    replicas: Replicas, clients: ClientFactory
) -> None:
    good, url = await replicas.answering()
    answer = await clients([replicas.refusing(), url]).get("g1")

    assert answer.gtid == "g1"
    assert [r["path"] for r in good.requests] == ["/v1/transactions/g1"]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_call_goes_to_the_next_replica_when_one_says_try_elsewhere(
    replicas: Replicas, clients: ClientFactory, status: int
) -> None:
    elsewhere, elsewhere_url = await replicas.answering((status, b"<html>not here</html>"))
    good, url = await replicas.answering()
    answer = await clients([elsewhere_url, url]).get("g1")

    assert answer.gtid == "g1"
    assert (len(elsewhere.requests), len(good.requests)) == (1, 1)


async def test_a_call_goes_to_the_next_replica_when_one_resets_the_connection(
    replicas: Replicas, clients: ClientFactory
) -> None:
    good, url = await replicas.answering()
    answer = await clients([await replicas.resetting(), url]).commit("g1")

    assert answer.gtid == "g1"
    assert replicas.accepted == 1
    assert [r["path"] for r in good.requests] == ["/v1/transactions/g1/commit"]


async def test_a_call_goes_to_the_next_replica_when_one_does_not_answer_in_time(
    replicas: Replicas, clients: ClientFactory
) -> None:
    good, url = await replicas.answering()
    answer = await clients([await replicas.silent(), url], timeout=0.3).get("g1")

    assert answer.gtid == "g1"
    assert replicas.accepted == 1
    assert len(good.requests) == 1


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c: c.enlist("g1", "queue-a", prepared=True), "/v1/transactions/g1/participants"),
        (lambda c: c.commit("g1"), "/v1/transactions/g1/commit"),
        (lambda c: c.abort("g1"), "/v1/transactions/g1/abort"),
        (lambda c: c.list(), "/v1/transactions"),
    ],
    ids=["enlist", "commit", "abort", "list"],
)
async def test_calls_that_are_safe_to_repeat_fail_over_after_a_503(
    replicas: Replicas, clients: ClientFactory, call: Callable[[CoordinatorClient], Awaitable[Any]], path: str
) -> None:
    not_ready, not_ready_url = await replicas.answering(NOT_READY)
    good, url = await replicas.answering()
    await call(clients([not_ready_url, url]))

    assert [r["path"] for r in not_ready.requests] == [path]
    assert [r["path"] for r in good.requests] == [path]


async def test_the_replica_that_answered_is_asked_first_next_time(replicas: Replicas, clients: ClientFactory) -> None:
    not_ready, not_ready_url = await replicas.answering(NOT_READY)
    good, url = await replicas.answering()
    client = clients([not_ready_url, url])
    await client.get("g1")
    await client.get("g2")
    await client.commit("g2")

    assert len(not_ready.requests) == 1
    assert [r["path"] for r in good.requests] == [
        "/v1/transactions/g1",
        "/v1/transactions/g2",
        "/v1/transactions/g2/commit",
    ]
    assert client.base_url == url


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_a_definite_error_from_a_replica_is_final(
    replicas: Replicas, clients: ClientFactory, status: int
) -> None:
    body = orjson.dumps({"error": {"code": "said_so", "message": "a definite answer"}})
    definite, definite_url = await replicas.answering((status, body))
    other, other_url = await replicas.answering()
    with pytest.raises(CoordinatorError) as caught:
        await clients([definite_url, other_url]).get("g1")

    assert (caught.value.status, caught.value.code) == (status, "said_so")
    assert len(definite.requests) == 1
    assert other.requests == []


# -- begin and execute ---------------------------------------------------------------------


async def begin(client: CoordinatorClient, key: str | None = None) -> Any:
    return await client.begin(timeout_ms=500, idempotency_key=key)


async def execute(client: CoordinatorClient, key: str | None = None) -> Any:
    return await client.execute([{"name": "queue-a", "payload": {}}], idempotency_key=key)


@pytest.mark.parametrize("call", [begin, execute], ids=["begin", "execute"])
async def test_begin_and_execute_without_a_key_are_not_sent_again_after_a_503(
    replicas: Replicas, clients: ClientFactory, call: Callable[..., Awaitable[Any]]
) -> None:
    not_ready, not_ready_url = await replicas.answering(NOT_READY)
    good, url = await replicas.answering()
    with pytest.raises(CoordinatorError) as caught:
        await call(clients([not_ready_url, url]))

    assert caught.value.status == 503
    assert len(not_ready.requests) == 1
    assert good.requests == []
    assert "not sent to the other replicas" in describe_failure(caught.value)


@pytest.mark.parametrize("call", [begin, execute], ids=["begin", "execute"])
async def test_begin_and_execute_without_a_key_are_not_sent_again_after_a_reset(
    replicas: Replicas, clients: ClientFactory, call: Callable[..., Awaitable[Any]]
) -> None:
    good, url = await replicas.answering()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(clients([await replicas.resetting(), url]))

    assert replicas.accepted == 1
    assert good.requests == []


async def test_after_a_begin_that_was_not_sent_again_the_next_call_starts_at_the_next_replica(
    replicas: Replicas, clients: ClientFactory
) -> None:
    not_ready, not_ready_url = await replicas.answering(NOT_READY)
    good, url = await replicas.answering()
    client = clients([not_ready_url, url])
    with pytest.raises(CoordinatorError):
        await begin(client)
    await begin(client)

    assert len(not_ready.requests) == 1
    assert len(good.requests) == 1


@pytest.mark.parametrize("call", [begin, execute], ids=["begin", "execute"])
async def test_begin_and_execute_without_a_key_go_on_from_a_replica_that_cannot_be_connected_to(
    replicas: Replicas, clients: ClientFactory, call: Callable[..., Awaitable[Any]]
) -> None:
    good, url = await replicas.answering()
    answer = await call(clients([replicas.refusing(), url]))

    assert answer.gtid == "g1"
    assert len(good.requests) == 1


@pytest.mark.parametrize("call", [begin, execute], ids=["begin", "execute"])
async def test_begin_and_execute_with_a_key_fail_over_with_the_same_key(
    replicas: Replicas, clients: ClientFactory, call: Callable[..., Awaitable[Any]]
) -> None:
    good, url = await replicas.answering()
    not_ready, not_ready_url = await replicas.answering(NOT_READY)
    await call(clients([await replicas.resetting(), not_ready_url, url]), "order-17")

    assert replicas.accepted == 1
    assert [r["idempotency_key"] for r in not_ready.requests] == ["order-17"]
    assert [r["idempotency_key"] for r in good.requests] == ["order-17"]


# -- every replica failing -----------------------------------------------------------------


async def test_when_every_replica_fails_the_last_failure_is_raised_with_what_each_said(
    replicas: Replicas, clients: ClientFactory
) -> None:
    refusing = replicas.refusing()
    _, not_ready_url = await replicas.answering(NOT_READY)
    with pytest.raises(CoordinatorError) as caught:
        await clients([refusing, not_ready_url]).get("g1")

    assert caught.value.status == 503
    said = describe_failure(caught.value)
    assert f"coordinator {refusing}: ClientConnectorError" in said
    assert f"coordinator {not_ready_url}: 503 not_ready: no lease yet" in said


async def test_when_every_replica_fails_without_an_answer_the_connection_error_is_raised(
    replicas: Replicas, clients: ClientFactory
) -> None:
    _, not_ready_url = await replicas.answering(NOT_READY)
    refusing = replicas.refusing()
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await clients([not_ready_url, refusing]).enlist("g1", "queue-a")

    assert len(caught.value.__notes__) == 2
    assert refusing in caught.value.__notes__[1]


async def test_one_url_fails_as_a_single_coordinator_did_without_notes(
    replicas: Replicas, clients: ClientFactory
) -> None:
    _, not_ready_url = await replicas.answering(NOT_READY)
    with pytest.raises(CoordinatorError) as caught:
        await clients([not_ready_url]).get("g1")

    assert not hasattr(caught.value, "__notes__")
    assert describe_failure(caught.value) == "503 not_ready: no lease yet"


# -- the URLs ------------------------------------------------------------------------------


def test_one_url_as_a_string_is_still_a_client_of_one_replica() -> None:
    client = CoordinatorClient("http://127.0.0.1:7070/")

    assert client.urls == ("http://127.0.0.1:7070",)
    assert client.base_url == "http://127.0.0.1:7070"


def test_urls_may_be_several_or_comma_separated_and_each_is_kept_once_in_order() -> None:
    urls = parse_coordinator_urls(["http://a:1, http://b:2/", "https://c/twopc,http://a:1", " "])

    assert urls == ("http://a:1", "http://b:2", "https://c/twopc")


@pytest.mark.parametrize("bad", ["", " , ", "localhost:7070", "ftp://a", "http://", "http://a:99999", "http://a/?x=1"])
def test_a_client_without_a_usable_url_is_refused_naming_the_url(bad: str) -> None:
    with pytest.raises(ValueError, match="coordinator URL") as caught:
        CoordinatorClient(bad)

    assert bad.strip(" ,") in str(caught.value)
