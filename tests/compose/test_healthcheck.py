"""The containers' health check: 200 is healthy; anything else, or no answer, is not."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from compose.healthcheck import healthy, main
from compose.supervisor import free_port

T = TypeVar("T")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": False}, status=503)

    app = web.Application()
    app.router.add_get("/readyz", ready)
    app.router.add_get("/not-ready", not_ready)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield str(test_server.make_url("")).rstrip("/")
    await test_server.close()


async def test_a_200_is_healthy_and_a_503_is_not(server: str) -> None:
    assert await _in_thread(healthy, f"{server}/readyz")
    assert not await _in_thread(healthy, f"{server}/not-ready")


async def test_the_exit_code_follows_the_answer_and_the_url_may_come_from_the_environment(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _in_thread(main, [f"{server}/readyz"]) == 0
    monkeypatch.setenv("TWOPC_HEALTHCHECK_URL", f"{server}/not-ready")
    assert await _in_thread(main, []) == 1


def test_nothing_listening_is_unhealthy_from_the_command_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    command = [sys.executable, "-m", "compose.healthcheck", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and url in done.stderr


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """The check blocks (urllib): run it off the loop that serves the test server."""
    return await asyncio.to_thread(function, *args)
