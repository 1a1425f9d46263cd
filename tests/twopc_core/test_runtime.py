"""The service runtime: the event loop and the garbage collector's settings."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

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
