"""Named failpoints, switched on by ``TWOPC_FAILPOINTS``.

A failpoint stands at a step that matters (``coordinator.after_decision_logged``)
and does nothing unless configured. The configuration is a ``;``-separated list of
``name=spec`` where spec is ``[P%][N*]action``:

- ``crash``: ``os._exit`` at once, as abrupt as SIGKILL (no cleanup, no flush), after
  one log line naming the failpoint (so an operator reading the log sees why);
- ``error``: raise :class:`FailpointError`;
- ``delay(ms)``: sleep that long;
- ``hang``: never return;
- ``stop``: the process stops itself (SIGSTOP), whole, as a stall does, until someone
  sends it SIGCONT: a chaos run's way to pause a node at one exact step;
- ``off``: nothing (useful to override an inherited setting).

``P%`` fires with that probability, ``N*`` fires at most N times.

``TWOPC_FAILPOINTS_FILE`` names a file holding the same text; a running service that
calls :func:`watch_file` re-reads it when it changes, so a chaos run can arm a
failpoint in a live process without restarting it. Examples:
``coordinator.after_decision_logged=crash``,
``participant.after_prepare_before_reply=50%delay(200)``,
``coordinator.before_commit_sent=1*error``.

Switched off, :func:`hit` costs one dict look-up.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

__all__ = [
    "CRASH_EXIT_CODE",
    "ENV_VAR",
    "Failpoint",
    "FailpointError",
    "active",
    "configure",
    "configure_from_env",
    "hit",
    "parse",
    "watch_file",
]

ENV_VAR = "TWOPC_FAILPOINTS"
FILE_ENV_VAR = "TWOPC_FAILPOINTS_FILE"
CRASH_EXIT_CODE = 77


_SPEC = re.compile(
    r"^(?:(?P<pct>\d+(?:\.\d+)?)%)?(?:(?P<count>\d+)\*)?"
    r"(?P<action>crash|error|hang|stop|off|delay\((?P<ms>\d+)\))$"
)


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``error``."""


@dataclass
class Failpoint:
    name: str
    action: str
    delay_ms: int = 0
    probability: float = 1.0
    remaining: int | None = None
    hits: int = field(default=0, compare=False)

    def should_fire(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.probability < 1.0 and random.random() >= self.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        self.hits += 1
        return True


_active: dict[str, Failpoint] = {}


def parse(text: str) -> dict[str, Failpoint]:
    """Parse a ``TWOPC_FAILPOINTS`` value; raises ValueError naming the bad part."""
    points: dict[str, Failpoint] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, spec = part.partition("=")
        name, spec = name.strip(), spec.strip()
        match = _SPEC.match(spec)
        if not sep or not name or match is None or float(match["pct"] or 0) > 100:
            raise ValueError(f"bad failpoint {part!r}: expected name=[P%][N*]crash|error|hang|stop|delay(ms)")
        action = match["action"]
        if action == "off":
            points.pop(name, None)
            continue
        points[name] = Failpoint(
            name=name,
            action="delay" if action.startswith("delay") else action,
            delay_ms=int(match["ms"] or 0),
            probability=float(match["pct"]) / 100 if match["pct"] else 1.0,
            remaining=int(match["count"]) if match["count"] else None,
        )
    return points


def configure(text: str | None) -> None:
    """Replace the active failpoints (``None`` or ``""`` switches all off)."""
    points = parse(text or "")  # a bad spec leaves the active points as they were
    _active.clear()
    _active.update(points)


def configure_from_env() -> None:
    configure(os.environ.get(ENV_VAR))


def active() -> dict[str, Failpoint]:
    return dict(_active)


def _log_crash(name: str) -> None:
    """The one line a crash leaves: in the process's log format, on stderr whatever
    structlog writes to, flushed (every other buffer is lost, as in a kill)."""
    processors = structlog.get_config()["processors"]
    crash_log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=processors)
    crash_log.critical("failpoint fired: crashing", failpoint=name, exit_code=CRASH_EXIT_CODE)
    sys.stderr.flush()


async def hit(name: str) -> None:
    """Pass the failpoint ``name``: usually nothing, else its configured action."""
    point = _active.get(name)
    if point is None or not point.should_fire():
        return
    if point.action == "crash":
        _log_crash(name)
        os._exit(CRASH_EXIT_CODE)
    if point.action == "error":
        raise FailpointError(f"failpoint {name} fired")
    if point.action == "delay":
        await asyncio.sleep(point.delay_ms / 1000)
    elif point.action == "hang":
        await asyncio.Event().wait()
    elif point.action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)


async def watch_file(path: str | None = None, interval: float = 0.1) -> None:
    """Re-read the failpoints file whenever it changes; runs until cancelled.

    The file's text replaces the active failpoints (the environment's included). A
    bad text is reported on stderr and leaves the active failpoints as they were.
    """
    path = path or os.environ.get(FILE_ENV_VAR)
    if not path:
        return
    seen: tuple[float, int] | None = None
    while True:
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != seen:
                seen = stamp
                configure(await asyncio.to_thread(Path(path).read_text))
        except FileNotFoundError:
            seen = None
        except ValueError as exc:
            print(f"failpoints file {path}: {exc}", file=sys.stderr)
        await asyncio.sleep(interval)


configure_from_env()
