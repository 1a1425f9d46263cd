"""The fault proxy passes traffic through, and cuts a link on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chaos.proxy import FaultProxy
from compose.supervisor import free_port


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(free_port(), echo_port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def roundtrip(port: int, data: bytes) -> bytes:
    """What comes back for ``data``; nothing when the connection was dropped or reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_traffic_passes_through(proxy: FaultProxy) -> None:
    assert await roundtrip(proxy.listen_port, b"hello") == b"hello"


async def test_a_cut_closes_open_connections(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
    proxy.set_cut(True)
    try:
        left = await asyncio.wait_for(reader.read(4), 5)
    except ConnectionResetError:
        left = b""
    assert left == b""  # the connection is gone
    writer.close()


async def test_a_cut_link_refuses_new_connections_until_healed(proxy: FaultProxy) -> None:
    proxy.set_cut(True)
    assert await roundtrip(proxy.listen_port, b"lost") == b""
    proxy.set_cut(False)
    assert await roundtrip(proxy.listen_port, b"back") == b"back"
