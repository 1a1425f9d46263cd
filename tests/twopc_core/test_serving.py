"""Serving an app: slow heads and bodies are cut off, connections are capped, and the
clients that behave go on being answered meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from twopc_core.http import error_middleware
from twopc_core.serving import ServerLimits, serving
from twopc_core.testing import wait_until

#: A slow client sends a byte this often: much less than the deadlines, so only the
#: deadline can end its connection.
TRICKLE = 0.05
#: How long a test waits for a connection to end before it calls the guard missing.
DEADLINE = 5.0


def app() -> web.Application:
    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"pong": True})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(message.data)
        return socket

    app = web.Application(middlewares=[error_middleware(service="the test service")])
    app.router.add_get("/ping", ping)
    app.router.add_post("/echo", echo)
    app.router.add_get("/ws", websocket)
    return app


@contextlib.asynccontextmanager
async def served(**limits: float) -> AsyncIterator[str]:
    async with serving(app(), "127.0.0.1", 0, limits=ServerLimits(**limits)) as site:  # type: ignore[arg-type]
        yield f"127.0.0.1:{site.port}"


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` a byte at a time, until it is sent or the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE)  # the pace of a slow client, not a wait for the server


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the server sends until it closes the connection (a reset counts as closed)."""
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE)
    except ConnectionResetError:
        return b""


def answer_of(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_a_head_sent_byte_by_byte_is_cut_off_while_other_clients_are_answered() -> None:
    async with served(header_timeout=0.5, body_timeout=5) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        slow = asyncio.create_task(trickle(writer, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 100))
        ended = asyncio.create_task(read_to_end(reader))
        answered = 0
        async with aiohttp.ClientSession() as session:
            while not ended.done():
                async with session.get(f"http://{address}/ping") as response:
                    assert response.status == 200
                    answered += 1
        raw = await ended
        elapsed = time.monotonic() - started
        slow.cancel()
        writer.close()
        assert 0.4 < elapsed < DEADLINE
        assert not slow.done() or slow.cancelled()  # it was still sending when cut off
        assert answered > 0
        status, body = answer_of(raw)
        assert status == 408
        assert body["error"]["code"] == "request_timeout"  # type: ignore[index]


async def test_the_next_head_on_a_kept_alive_connection_has_a_deadline_too() -> None:
    async with served(header_timeout=0.5, body_timeout=5) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
        )
        await reader.readexactly(length)
        slow = asyncio.create_task(trickle(writer, b"GET /ping HTTP/1.1\r\n" + b"X-Slow: y\r\n" * 100))
        raw = await read_to_end(reader)
        slow.cancel()
        writer.close()
        assert answer_of(raw)[0] == 408


async def test_a_body_trickled_slowly_is_cut_off_with_a_json_408() -> None:
    async with served(header_timeout=5, body_timeout=0.5) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n")
        slow = asyncio.create_task(trickle(writer, b"x" * 400))
        raw = await read_to_end(reader)
        assert not slow.done()  # the body was still coming: the deadline ended it
        slow.cancel()
        writer.close()
        status, body = answer_of(raw)
        assert status == 408
        assert body["error"]["code"] == "request_timeout"  # type: ignore[index]


async def test_a_body_that_arrives_in_time_is_read_whole() -> None:
    async with served(header_timeout=5, body_timeout=5) as address, aiohttp.ClientSession() as session:
        async with session.post(f"http://{address}/echo", data=b"y" * 100_000) as response:
            assert response.status == 200
            assert await response.json() == {"size": 100_000}


async def test_connections_beyond_the_cap_are_refused_at_once_and_the_open_ones_go_on() -> None:
    async with served(header_timeout=30, body_timeout=30, max_connections=2) as address:
        host, port = address.split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        # Both are admitted once the server has answered on them.
        for reader, writer in held:
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)).startswith(b"HTTP/1.1 200")
            await reader.readuntil(b"}")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        raw = await read_to_end(reader)
        writer.close()
        assert time.monotonic() - started < DEADLINE
        if raw:  # the 503 may be lost to the reset of a connection closed with unread data
            status, body = answer_of(raw)
            assert status == 503
            assert body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        for held_reader, held_writer in held:
            held_writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(held_reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200")
            await held_reader.readuntil(b"}")
        for _, held_writer in held:
            held_writer.close()


async def test_a_connection_that_ends_frees_its_slot_for_a_new_one() -> None:
    async with served(header_timeout=30, body_timeout=30, max_connections=1) as address:
        host, port = address.split(":")
        held_reader, held_writer = await asyncio.open_connection(host, int(port))
        held_writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(held_reader.readuntil(b"\r\n\r\n"), DEADLINE)).startswith(b"HTTP/1.1 200")
        refused_reader, refused_writer = await asyncio.open_connection(host, int(port))
        assert not (await read_to_end(refused_reader)).startswith(b"HTTP/1.1 200")
        refused_writer.close()
        held_writer.close()

        async def admitted() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(f"http://{address}/ping") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(admitted, timeout=DEADLINE, message="a new connection admitted")


async def test_a_websocket_outlives_the_head_deadline() -> None:
    async with served(header_timeout=0.3, body_timeout=0.3) as address, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://{address}/ws") as socket:
            started = time.monotonic()
            while time.monotonic() - started < 1.0:  # messages for three head deadlines
                await socket.send_str("hello")
                assert (await socket.receive(timeout=DEADLINE)).data == "hello"
                await asyncio.sleep(TRICKLE)
            assert not socket.closed


@pytest.mark.parametrize("limits", [{"header_timeout": 0}, {"body_timeout": -1}, {"max_connections": 0}])
def test_limits_must_be_positive(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServerLimits(**limits)  # type: ignore[arg-type]
