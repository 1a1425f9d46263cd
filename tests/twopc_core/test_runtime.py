"""The service runtime: the event loop, the garbage collector's settings, and running a
service until a signal stops it."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import sys
from collections.abc import Iterator

import aiohttp
import pytest

from twopc_core.runtime import new_event_loop, tune_garbage_collector


@pytest.fixture
def collector() -> Iterator[None]:
    """Put the collector back as it was: the settings are process-wide."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tuning_freezes_what_exists_and_raises_the_youngest_threshold(collector: None) -> None:
    default_young = gc.get_threshold()[0]
    assert gc.get_freeze_count() == 0
    tune_garbage_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] > default_young


def test_the_event_loop_runs_coroutines() -> None:
    loop = new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        loop.close()


#: A service that says where it listens, and says so again when its clean-up has run.
_SERVICE = """
import sys
from aiohttp import web
from twopc_core.runtime import run_service

async def ping(_):
    return web.json_response({"pong": True})

async def lifecycle(_app):
    yield
    print("cleaned up", flush=True)

app = web.Application()
app.router.add_get("/ping", ping)
app.cleanup_ctx.append(lifecycle)
run_service(app, "127.0.0.1", 0, print=lambda line: print(line, flush=True))
"""


@pytest.mark.slow
async def test_a_service_runs_until_sigterm_and_then_cleans_up() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVICE, stdout=asyncio.subprocess.PIPE, env={**os.environ}
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = re.search(r"http://[\d.]+:\d+", line)
        assert url is not None, line
        async with aiohttp.ClientSession() as session, session.get(f"{url.group(0)}/ping") as response:
            assert await response.json() == {"pong": True}
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert b"cleaned up" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
