"""The load generator's event loop: tuned like a service's while it runs, and the
process's garbage collector as it was once it is done (a caller may go on)."""

from __future__ import annotations

import asyncio
import gc

from tools.bench import _event_loop_run


async def _collector_while_running() -> tuple[int, int]:
    await asyncio.sleep(0)
    return gc.get_freeze_count(), gc.get_threshold()[0]


def test_the_load_generator_tunes_the_collector_while_it_runs_and_puts_it_back() -> None:
    before = gc.get_freeze_count(), gc.get_threshold()

    frozen, young = _event_loop_run(_collector_while_running())

    assert frozen > 0 and young > before[1][0]
    assert (gc.get_freeze_count(), gc.get_threshold()) == before
