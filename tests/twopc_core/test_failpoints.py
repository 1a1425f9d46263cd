"""Named failpoints: parsing TWOPC_FAILPOINTS and what hitting one does."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from twopc_core import failpoints
from twopc_core.failpoints import CRASH_EXIT_CODE, Failpoint, FailpointError, hit, parse


@pytest.fixture(autouse=True)
def no_failpoints() -> Iterator[None]:
    failpoints.configure(None)
    yield
    failpoints.configure(None)


# -- parse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "action", "delay_ms"),
    [
        ("crash", "crash", 0),
        ("error", "error", 0),
        ("hang", "hang", 0),
        ("stop", "stop", 0),
        ("delay(250)", "delay", 250),
    ],
)
def test_parse_actions(spec: str, action: str, delay_ms: int) -> None:
    point = parse(f"coordinator.after_decision_logged={spec}")["coordinator.after_decision_logged"]
    assert point == Failpoint("coordinator.after_decision_logged", action, delay_ms=delay_ms)
    assert point.probability == 1.0
    assert point.remaining is None


def test_parse_probability() -> None:
    points = parse("a=50%error;b=12.5%crash")
    assert points["a"].probability == 0.5
    assert points["b"].probability == 0.125
    assert points["a"].remaining is None


def test_parse_count() -> None:
    point = parse("a=3*error")["a"]
    assert point.remaining == 3
    assert point.probability == 1.0


def test_parse_probability_and_count_together() -> None:
    point = parse("a=25%2*delay(10)")["a"]
    assert (point.action, point.delay_ms, point.probability, point.remaining) == ("delay", 10, 0.25, 2)


def test_parse_several_with_spaces_and_empty_parts() -> None:
    points = parse(" a = error ;; b=crash ; ")
    assert {name: p.action for name, p in points.items()} == {"a": "error", "b": "crash"}


def test_parse_off_leaves_the_point_out() -> None:
    assert parse("a=off;b=error").keys() == {"b"}


def test_parse_off_overrides_an_earlier_setting_of_the_same_point() -> None:
    # An inherited TWOPC_FAILPOINTS with "name=off" appended switches that point off.
    assert "a" not in parse("a=crash;b=error;a=off")


def test_parse_later_setting_of_the_same_point_wins() -> None:
    assert parse("a=crash;a=2*error")["a"].action == "error"


def test_parse_empty_is_nothing() -> None:
    assert parse("") == {}
    assert parse(" ; ") == {}


@pytest.mark.parametrize(
    "bad",
    [
        "a=explode",
        "a",
        "=crash",
        "a=",
        "a=delay()",
        "a=delay(1.5)",
        "a=delay",
        "a=50error",
        "a=%error",
        "a=-1*error",
        "a=error*2",
        "a=150%error",
    ],
)
def test_parse_bad_spec_raises_naming_the_part(bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse(f"good=error;{bad}")
    assert repr(bad) in str(excinfo.value)
    assert "good" not in str(excinfo.value)


def test_configure_replaces_and_clears() -> None:
    failpoints.configure("a=error")
    failpoints.configure("b=crash")
    assert failpoints.active().keys() == {"b"}
    failpoints.configure("")
    assert failpoints.active() == {}


def test_configure_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.ENV_VAR, "participant.after_prepare_before_reply=1*error")
    failpoints.configure_from_env()
    assert failpoints.active()["participant.after_prepare_before_reply"].remaining == 1
    monkeypatch.delenv(failpoints.ENV_VAR)
    failpoints.configure_from_env()
    assert failpoints.active() == {}


def test_configure_with_a_bad_spec_keeps_the_previous_points() -> None:
    failpoints.configure("a=error")
    with pytest.raises(ValueError):
        failpoints.configure("a=explode")
    assert failpoints.active().keys() == {"a"}


# -- hit --------------------------------------------------------------------------


async def test_hit_unconfigured_does_nothing() -> None:
    failpoints.configure("other=error")
    await hit("a")  # does not raise


async def test_hit_error_raises_naming_the_point() -> None:
    failpoints.configure("coordinator.before_commit_sent=error")
    with pytest.raises(FailpointError, match=re.escape("coordinator.before_commit_sent")):
        await hit("coordinator.before_commit_sent")
    assert failpoints.active()["coordinator.before_commit_sent"].hits == 1


async def test_hit_delay_waits_that_long() -> None:
    failpoints.configure("a=delay(80)")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hit("a")
    assert loop.time() - started >= 0.08


async def test_hit_delay_lets_other_tasks_run() -> None:
    failpoints.configure("a=delay(50)")
    ran = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_soon(ran.set)
    await hit("a")
    assert ran.is_set()


async def test_hit_hang_never_returns() -> None:
    failpoints.configure("a=hang")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hit("a"), timeout=0.05)


async def test_hit_count_exhausts() -> None:
    failpoints.configure("a=2*error")
    for _ in range(2):
        with pytest.raises(FailpointError):
            await hit("a")
    await hit("a")  # exhausted: passes
    await hit("a")
    point = failpoints.active()["a"]
    assert (point.hits, point.remaining) == (2, 0)


async def test_hit_probability_fires_below_it(monkeypatch: pytest.MonkeyPatch) -> None:
    failpoints.configure("a=30%error")
    monkeypatch.setattr(failpoints.random, "random", lambda: 0.29)
    with pytest.raises(FailpointError):
        await hit("a")
    monkeypatch.setattr(failpoints.random, "random", lambda: 0.3)
    await hit("a")  # does not fire


async def test_hit_probability_miss_does_not_use_up_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    failpoints.configure("a=50%1*error")
    monkeypatch.setattr(failpoints.random, "random", lambda: 0.9)
    for _ in range(5):
        await hit("a")
    monkeypatch.setattr(failpoints.random, "random", lambda: 0.1)
    with pytest.raises(FailpointError):
        await hit("a")
    await hit("a")  # the one allowed firing is spent


async def test_hit_zero_percent_never_fires() -> None:
    failpoints.configure("a=0%error")
    for _ in range(200):
        await hit("a")
    assert failpoints.active()["a"].hits == 0


_CRASH_SCRIPT = """
import asyncio, atexit
from twopc_core import failpoints
failpoints.configure("coordinator.after_decision_logged=crash")
atexit.register(print, "atexit", flush=True)
print("before", flush=True)
print("buffered")  # stdout is a pipe: this stays in the buffer unless someone flushes it
try:
    asyncio.run(failpoints.hit("coordinator.after_decision_logged"))
    print("after", flush=True)
finally:
    print("finally", flush=True)
"""


def _run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", failpoints.ENV_VAR)}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**environ, **(env or {})},
        check=False,
    )


def test_hit_crash_exits_the_process_at_once() -> None:
    result = _run(_CRASH_SCRIPT)
    assert result.returncode == CRASH_EXIT_CODE, result.stderr
    assert "before" in result.stdout
    assert "after" not in result.stdout
    # Abrupt, like SIGKILL: no finally blocks, no exit handlers, no buffer flush.
    assert "finally" not in result.stdout
    assert "atexit" not in result.stdout
    assert "buffered" not in result.stdout


def test_a_crash_logs_the_failpoint_it_fired_before_it_exits() -> None:
    result = _run(_CRASH_SCRIPT)
    assert result.returncode == CRASH_EXIT_CODE
    (line,) = [line for line in result.stderr.splitlines() if "failpoint fired" in line]
    assert "coordinator.after_decision_logged" in line


def test_crash_configured_from_the_environment_exits_the_process() -> None:
    script = (
        "import asyncio\n"
        "from twopc_core import failpoints\n"
        "asyncio.run(failpoints.hit('participant.after_prepare_before_reply'))\n"
        "print('after', flush=True)\n"
    )
    result = _run(script, {failpoints.ENV_VAR: "participant.after_prepare_before_reply=crash"})
    assert result.returncode == CRASH_EXIT_CODE, result.stderr
    assert "after" not in result.stdout


def _process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_hit_stop_stops_the_whole_process_until_it_is_continued() -> None:
    script = (
        "import asyncio\n"
        "from twopc_core import failpoints\n"
        "failpoints.configure('coordinator.before_decision_logged=stop')\n"
        "asyncio.run(failpoints.hit('coordinator.before_decision_logged'))\n"
        "print('after', flush=True)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != failpoints.ENV_VAR}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environ)
    try:
        deadline = time.monotonic() + 30
        while _process_state(process.pid) != "T":
            assert process.poll() is None and time.monotonic() < deadline, "the process never stopped"
            time.sleep(0.01)
        process.send_signal(signal.SIGCONT)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert out == "after\n"


async def test_watch_file_arms_and_disarms_failpoints_in_a_running_process(tmp_path: Path) -> None:
    from twopc_core.testing import wait_until

    path = tmp_path / "failpoints"
    path.write_text("coordinator.after_decision_logged=1*crash")
    watcher = asyncio.create_task(failpoints.watch_file(str(path), interval=0.01))
    try:
        await wait_until(lambda: "coordinator.after_decision_logged" in failpoints.active(), timeout=5)
        path.write_text("participant.before_commit_applied=error")
        await wait_until(lambda: set(failpoints.active()) == {"participant.before_commit_applied"}, timeout=5)
        path.write_text("")
        await wait_until(lambda: failpoints.active() == {}, timeout=5)
    finally:
        watcher.cancel()
        failpoints.configure(None)
