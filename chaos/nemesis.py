"""Nemeses: the faults a scenario strikes the system with, each followed by its healing.

Every strike is recorded as a :class:`Fault` with when it began, when it was healed (the
node restarted, resumed or reconnected) and when the system had recovered: the moment
the coordinator no longer held any unfinished transaction begun before the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass
from datetime import datetime

from chaos.scenario import NemesisSpec
from chaos.topology import Topology
from participant_sdk.client import CoordinatorClient
from twopc_core.failpoints import CRASH_EXIT_CODE

__all__ = ["Fault", "Nemesis"]

_UNFINISHED = ("preparing", "committing", "aborting")


@dataclass
class Fault:
    kind: str
    target: str
    detail: str
    started: float
    healed: float | None = None
    recovered: float | None = None

    @property
    def recovery_seconds(self) -> float | None:
        if self.healed is None or self.recovered is None:
            return None
        return max(0.0, self.recovered - self.healed)


class Nemesis:
    def __init__(self, spec: NemesisSpec, topology: Topology, rng: random.Random, t0: float, duration: float) -> None:
        self.spec = spec
        self.duration = duration
        self.topology = topology
        self.rng = rng
        self.t0 = t0
        self.faults: list[Fault] = []
        #: Strikes that came to nothing (a failpoint the workload never reached).
        self.misses = 0
        self._recoveries: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def _target(self) -> str:
        target = self.spec.target
        participants = list(self.topology.participants)
        if target == "participants":
            return self.rng.choice(participants)
        if target == "any":
            return self.rng.choice(["coordinator", *participants])
        return target

    async def run(self, stop: asyncio.Event) -> None:
        # The first strike comes within the first half of the run, however short it is.
        wait = min(self.spec.every_s, self.duration / 2) * self.rng.uniform(0.5, 1.0)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            wait = self.spec.every_s * self.rng.uniform(0.5, 1.5)
            if stop.is_set():
                break
            await self.strike()

    async def wait_recovered(self, timeout: float) -> None:
        if self._recoveries:
            await asyncio.wait(self._recoveries, timeout=timeout)

    async def strike(self) -> None:
        target = self._target()
        kind = self.spec.kind
        if kind == "kill":
            fault = self._record(target, "SIGKILL")
            self.topology.nodes[target].kill(signal.SIGKILL)
            await asyncio.sleep(self.spec.downtime_s)
            await self.topology.restart(target)
        elif kind == "crash-at-failpoint":
            assert self.spec.failpoint is not None
            armed = self.topology.failpoints_file(target)
            armed.write_text(f"{self.spec.failpoint}=1*crash")
            exited = await self._wait_exit(target, timeout=max(10.0, 2 * self.spec.every_s))
            armed.write_text("")
            if exited is None:
                self.misses += 1
                return
            fault = self._record(target, f"crashed at {self.spec.failpoint}")
            if exited != CRASH_EXIT_CODE:
                fault.detail += f" (exit code {exited})"
            await asyncio.sleep(self.spec.downtime_s)
            await self.topology.restart(target)
        elif kind == "pause":
            fault = self._record(target, f"SIGSTOP for {self.spec.downtime_s:g}s")
            self.topology.nodes[target].kill(signal.SIGSTOP)
            await asyncio.sleep(self.spec.downtime_s)
            self.topology.nodes[target].kill(signal.SIGCONT)
        elif kind == "partition":
            if target == "coordinator":
                target = self.rng.choice(list(self.topology.participants))
            fault = self._record(target, f"cut off from the coordinator for {self.spec.downtime_s:g}s")
            for proxy in self.topology.proxies[target]:
                proxy.set_cut(True)
            await asyncio.sleep(self.spec.downtime_s)
            for proxy in self.topology.proxies[target]:
                proxy.set_cut(False)
        elif kind == "restart-service":
            fault = self._record(target, f"{target} restarted")
            await asyncio.to_thread(_restart_service, target, self.spec.downtime_s)
        else:
            raise ValueError(f"nemesis {kind!r} is not available in this topology")
        fault.healed = self._now()
        task = asyncio.create_task(self._watch_recovery(fault))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    def _record(self, target: str, detail: str) -> Fault:
        fault = Fault(self.spec.kind, target, detail, started=self._now())
        self.faults.append(fault)
        return fault

    async def _wait_exit(self, target: str, timeout: float) -> int | None:
        node = self.topology.nodes[target]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if node.process is not None and node.process.poll() is not None:
                return node.process.returncode
            await asyncio.sleep(0.02)
        return None

    async def _watch_recovery(self, fault: Fault) -> None:
        """Poll until nothing begun before the fault is unfinished at the coordinator."""
        async with CoordinatorClient(self.topology.coordinator_url, timeout=2) as client:
            while True:
                try:
                    if not await _unfinished_before(client, self.t0 + fault.started):
                        fault.recovered = self._now()
                        return
                except Exception:  # the coordinator may still be down
                    pass
                await asyncio.sleep(0.1)


def _restart_service(name: str, downtime: float) -> None:
    """Stop and start a dev service (``twopc dev``): PostgreSQL or the Kafka broker."""
    from compose.dev import default_state_dir, service, write_service

    state_dir = default_state_dir()
    write_service(state_dir, name, service(name).restart(state_dir, downtime))


async def _unfinished_before(client: CoordinatorClient, loop_time: float) -> bool:
    """Whether an unfinished transaction was begun before the given loop time.

    The coordinator reports wall-clock times, so the check compares ages.
    """
    age = asyncio.get_running_loop().time() - loop_time
    cutoff = time.time() - age
    for state in _UNFINISHED:
        page = await client.list(state=state, limit=1)
        for tx in page["transactions"]:
            if datetime.fromisoformat(tx["created_at"]).timestamp() < cutoff:
                return True
    return False
