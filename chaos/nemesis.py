"""Nemeses: the faults a scenario strikes the system with, each followed by its healing.

Every strike is recorded as a :class:`Fault` with when it began, when it was healed (the
node restarted, resumed or reconnected) and when the system had recovered: the moment
the coordinators no longer held any unfinished transaction begun before the fault. A
strike at a replica over a shared log also records when another replica took it over.
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
#: Strikes after which a replica may be taken over by another.
_MAY_BE_TAKEN_OVER = {"kill", "crash-at-failpoint", "pause", "pause-at-failpoint", "partition-log"}


@dataclass
class Fault:
    kind: str
    target: str
    detail: str
    started: float
    healed: float | None = None
    recovered: float | None = None
    #: When another replica took the struck one over (seconds since the run began).
    taken_over: float | None = None
    taken_over_by: str | None = None

    @property
    def recovery_seconds(self) -> float | None:
        if self.healed is None or self.recovered is None:
            return None
        return max(0.0, self.recovered - self.healed)

    @property
    def takeover_seconds(self) -> float | None:
        """From the strike to the takeover."""
        return None if self.taken_over is None else max(0.0, self.taken_over - self.started)


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
        #: Per fault (by id) at a replica over a shared log: the watch for its takeover.
        self._takeovers: dict[int, asyncio.Task[tuple[float, str]]] = {}

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def _target(self) -> str:
        """The node to strike: of the spec's choices, one no other nemesis is striking
        (overlapping strikes would cut each other short), if there is one."""
        target = self.spec.target
        participants = list(self.topology.participants)
        choices = {
            "participants": participants,
            "coordinator": self.topology.replicas,
            "any": [*self.topology.replicas, *participants],
        }.get(target, [target])
        return self.rng.choice([c for c in choices if c not in self.topology.struck] or choices)

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
        self.topology.struck.add(target)
        try:
            await self._strike(target)
        finally:
            self.topology.struck.discard(target)

    async def _strike(self, target: str) -> None:
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
        elif kind == "pause-at-failpoint":
            armed = self.topology.failpoints_file(target)
            armed.write_text(f"{self.spec.failpoint}=1*stop")
            stopped = await self._wait_stopped(target, timeout=max(10.0, 2 * self.spec.every_s))
            armed.write_text("")
            if not stopped:
                self.misses += 1
                return
            fault = self._record(target, f"stopped at {self.spec.failpoint} for {self.spec.downtime_s:g}s")
            await asyncio.sleep(self.spec.downtime_s)
            self.topology.nodes[target].kill(signal.SIGCONT)
        elif kind == "partition":
            if target in self.topology.replicas:
                target = self.rng.choice(list(self.topology.participants))
            fault = self._record(target, f"cut off from the coordinator for {self.spec.downtime_s:g}s")
            for proxy in self.topology.proxies[target]:
                proxy.set_cut(True)
            await asyncio.sleep(self.spec.downtime_s)
            for proxy in self.topology.proxies[target]:
                proxy.set_cut(False)
        elif kind == "partition-log":
            if target not in self.topology.log_proxies:
                raise ValueError(f"partition-log strikes a replica over a shared log, not {target!r}")
            fault = self._record(target, f"cut off from the log's database for {self.spec.downtime_s:g}s")
            self.topology.log_proxies[target].set_cut(True)
            await asyncio.sleep(self.spec.downtime_s)
            self.topology.log_proxies[target].set_cut(False)
        elif kind == "restart-service":
            fault = self._record(target, f"{target} restarted")
            await asyncio.to_thread(_restart_service, target, self.spec.downtime_s)
        else:
            raise ValueError(f"nemesis {kind!r} is not available in this topology")
        fault.healed = self._now()
        task = asyncio.create_task(self._watch_recovery(fault, self._takeovers.pop(id(fault), None)))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    def _record(self, target: str, detail: str) -> Fault:
        fault = Fault(self.spec.kind, target, detail, started=self._now())
        self.faults.append(fault)
        if self.spec.kind in _MAY_BE_TAKEN_OVER:
            # Watched from the strike on: a replica that comes back joins again, and the
            # log then forgets who had taken it over.
            takeover = self._watch_takeover(target)
            if takeover is not None:
                self._takeovers[id(fault)] = takeover
        return fault

    async def _wait_stopped(self, target: str, timeout: float) -> bool:
        node = self.topology.nodes[target]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if node.stopped:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _wait_exit(self, target: str, timeout: float) -> int | None:
        node = self.topology.nodes[target]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if node.process is not None and node.process.poll() is not None:
                return node.process.returncode
            await asyncio.sleep(0.02)
        return None

    def _watch_takeover(self, target: str) -> asyncio.Task[tuple[float, str]] | None:
        """With a shared log, a task that ends when another replica has taken ``target``
        over: when (seconds since the run began) and by whom."""
        others = [self.topology.url(r) for r in self.topology.replicas if r != target]
        if not self.topology.scenario.cluster.shared or target not in self.topology.replicas or not others:
            return None
        node_id = f"c{self.topology.replicas.index(target) + 1}"
        since = time.time()

        async def watch() -> tuple[float, str]:
            async with CoordinatorClient(others, timeout=1, token=self.topology.tokens["reader"]) as client:
                while True:
                    try:
                        for replica in (await client.cluster()).replicas:
                            at = replica.taken_over_at
                            if replica.node_id == node_id and at is not None:
                                when = at.timestamp()
                                if when >= since:
                                    return self._now() - (time.time() - when), str(replica.taken_over_by)
                    except Exception:  # every other replica may be busy or away a moment
                        pass
                    await asyncio.sleep(0.05)

        return asyncio.create_task(watch())

    async def _watch_recovery(self, fault: Fault, takeover: asyncio.Task[tuple[float, str]] | None) -> None:
        """Poll until nothing begun before the fault is unfinished at the coordinators."""
        try:
            async with CoordinatorClient(
                self.topology.coordinator_urls, timeout=2, token=self.topology.tokens["reader"]
            ) as client:
                while True:
                    try:
                        if not await _unfinished_before(client, self.t0 + fault.started):
                            fault.recovered = self._now()
                            break
                    except Exception:  # the coordinators may still be down
                        pass
                    await asyncio.sleep(0.1)
            if takeover is not None:
                # A replica back before its lease ran out was never taken over.
                with contextlib.suppress(TimeoutError):
                    fault.taken_over, fault.taken_over_by = await asyncio.wait_for(asyncio.shield(takeover), 1.0)
        finally:
            if takeover is not None:
                takeover.cancel()


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
