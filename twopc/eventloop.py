"""The event loop twopc's services run on: uvloop where it is installed.

uvloop roughly halves the CPU an HTTP exchange costs, and every transaction is a
handful of exchanges; plain asyncio still works where uvloop is missing.
"""

from __future__ import annotations

import asyncio

__all__ = ["new_event_loop"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
