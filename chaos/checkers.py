"""The invariants, checked after the faults stop and the system settles.

- atomicity: every transaction's effects are at all its participants or at none;
- exactly once: no effect appears twice;
- durability: what a client was told ``committed`` is committed everywhere;
- no effect of aborted: what a client was told ``aborted`` left nothing anywhere;
- liveness: with faults stopped, nothing stays in doubt longer than the bound;
- conservation and no prepared work left: the participants' own checks.

Transactions whose client heard nothing (``unknown``) are resolved by asking the
coordinator; their effects must match what it says.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from chaos.participants import BankKind
from chaos.topology import Topology
from chaos.workload import Txn
from participant_sdk.client import CoordinatorClient, CoordinatorError

__all__ = ["CheckResult", "check", "settle"]


@dataclass
class CheckResult:
    violations: list[str] = field(default_factory=list)
    resolved: Counter[str] = field(default_factory=Counter)
    effects: int = 0


async def settle(topology: Topology, http: aiohttp.ClientSession, bound: float) -> float | None:
    """Wait until nothing is unfinished at the coordinator or in doubt at a participant.

    Returns the seconds it took, or None when the bound passed first.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with CoordinatorClient(topology.coordinator_url, timeout=5) as client:
        while loop.time() - start < bound:
            try:
                busy = False
                for state in ("active", "preparing", "committing", "aborting"):
                    if (await client.list(state=state, limit=1))["transactions"]:
                        busy = True
                for participant in topology.participants.values():
                    if await participant.in_doubt(http) != 0:
                        busy = True
                if not busy:
                    return loop.time() - start
            except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    return None


async def check(
    topology: Topology, http: aiohttp.ClientSession, history: list[Txn], invariants: list[str]
) -> CheckResult:
    result = CheckResult()
    wanted = set(invariants)
    names = list(topology.participants)
    gtid_of = {txn.tag: txn.gtid for txn in history if txn.gtid is not None}
    effects: dict[str, Counter[str]] = {}
    for name, participant in topology.participants.items():
        counted = await participant.effects(http)
        if participant.effects_key == "tag":
            # A tag whose transaction never got a gtid cannot have been committed.
            counted = Counter({gtid_of.get(tag, f"tag:{tag}"): n for tag, n in counted.items()})
        effects[name] = counted
    result.effects = sum(sum(c.values()) for c in effects.values())

    def report(invariant: str, message: str) -> None:
        if invariant in wanted:
            result.violations.append(f"{invariant}: {message}")

    everywhere: set[str] = set()
    for gtid in set().union(*(set(c) for c in effects.values())):
        at = [n for n in names if effects[n][gtid]]
        if len(at) != len(names):
            report("atomicity", f"{gtid} took effect at {at} but not at {sorted(set(names) - set(at))}")
        else:
            everywhere.add(gtid)
        for name in at:
            if effects[name][gtid] > 1:
                report("exactly_once", f"{gtid} took effect {effects[name][gtid]} times at {name}")

    final = await _final_outcomes(topology, history, result)
    for txn in history:
        if txn.gtid is None:
            continue
        told, outcome = txn.outcome, final.get(txn.gtid)
        anywhere = any(effects[n][txn.gtid] for n in names)
        if told == "committed" and txn.gtid not in everywhere:
            report("durability", f"{txn.gtid} was reported committed but is not committed everywhere")
        if told == "aborted" and anywhere:
            report("no_effect_of_aborted", f"{txn.gtid} was reported aborted but took effect")
        if told == "unknown" and outcome == "committed" and txn.gtid not in everywhere:
            report("durability", f"{txn.gtid} is committed at the coordinator but not everywhere")
        if told == "unknown" and outcome == "aborted" and anywhere:
            report("no_effect_of_aborted", f"{txn.gtid} is aborted at the coordinator but took effect")

    for participant in topology.participants.values():
        for invariant, message in await participant.violations(http):
            report(invariant, message)
    banks = [p for p in topology.participants.values() if isinstance(p, BankKind)]
    if banks:
        total = sum([await bank.total(http) for bank in banks])
        opening = sum(bank.ACCOUNTS * bank.OPENING_BALANCE for bank in banks)
        if total != opening:
            report("conservation", f"the banks hold {total} in all, not the {opening} they opened with")
    return result


async def _final_outcomes(topology: Topology, history: list[Txn], result: CheckResult) -> dict[str, str]:
    """What the coordinator says of every transaction whose client heard nothing."""
    final: dict[str, str] = {}
    async with CoordinatorClient(topology.coordinator_url, timeout=10) as client:
        for txn in history:
            if txn.outcome != "unknown" or txn.gtid is None:
                continue
            try:
                outcome = (await client.get(txn.gtid))["outcome"] or "undecided"
            except CoordinatorError as exc:
                if exc.status != 404:
                    raise
                outcome = "aborted"  # no record: presumed abort
            final[txn.gtid] = outcome
            result.resolved[outcome] += 1
    return final
