"""Fault injection a test switches on at run time (``POST /queue/faults``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.http import Handler, Middleware

__all__ = ["FaultSwitch", "Faults", "garbage_middleware"]

#: What a garbled answer looks like: a 200 that no protocol parser accepts.
GARBAGE = b"\x00garbage: this is not a protocol answer {"


class Faults(BaseModel):
    """The faults in force. Setting them replaces all of them: ``{}`` switches all off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: How prepare votes (``no`` also makes a one-phase commit abort).
    vote: Literal["yes", "no"] = "yes"
    #: Wait this long before answering each prepare and commit.
    delay_ms: int = Field(default=0, ge=0, le=600_000)
    #: Exit abruptly (like SIGKILL) at this step: ``prepare`` right after the items are
    #: staged on disk, before the vote is logged or sent; ``commit`` right after the
    #: items are committed on disk, before the branch is logged committed or answered.
    crash_on: Literal["prepare", "commit"] | None = None
    #: Answer prepare (and any batch carrying a prepare) with a 200 of non-JSON bytes,
    #: after doing the prepare.
    garbage: bool = False


class FaultSwitch:
    """The current faults, shared by the resource, the middleware and the endpoints."""

    def __init__(self, exit_process: Callable[[int], object] = os._exit) -> None:
        self.current = Faults()
        # Injectable so tests can see a crash without losing the test process.
        self._exit = exit_process

    def set(self, faults: Faults) -> Faults:
        self.current = faults
        return faults

    def crash_if(self, step: str) -> None:
        if self.current.crash_on == step:
            self._exit(CRASH_EXIT_CODE)


def garbage_middleware(switch: FaultSwitch) -> Middleware:
    """A middleware for the participant sub-app that garbles prepare answers when asked."""

    @web.middleware
    async def garble(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not switch.current.garbage or response.status != 200:
            return response
        operation = request.path.rsplit("/", 1)[-1]
        if operation == "prepare" or (operation == "batch" and _carries_prepare(await request.read())):
            return web.Response(status=200, body=GARBAGE, content_type="application/json")
        return response

    return garble


def _carries_prepare(body: bytes) -> bool:
    try:
        ops = orjson.loads(body).get("ops", [])
        return any(isinstance(op, dict) and op.get("op") == "prepare" for op in ops)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return False
