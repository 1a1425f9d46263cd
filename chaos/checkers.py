"""The invariants, checked after the faults stop and the system settles.

- atomicity: every transaction's effects are at all its participants or at none;
- exactly once: no effect appears twice;
- durability: what a client was told ``committed`` is committed everywhere;
- no effect of aborted: what a client was told ``aborted`` left nothing anywhere;
- liveness: with faults stopped, nothing stays in doubt longer than the bound;
- conservation and no prepared work left: the participants' own checks;
- one outcome: every replica gives every transaction the same outcome, and the
  participants' effects agree with it;
- one transaction per key: every begin with one Idempotency-Key answered one gtid, and
  a tag's work at a participant came from one transaction.

Transactions whose client heard nothing (``unknown``) are resolved by asking the
coordinators; their effects must match what they say.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from chaos.participants import BankKind
from chaos.topology import Topology
from chaos.workload import Txn
from participant_sdk.client import CoordinatorClient, CoordinatorError

__all__ = ["CheckResult", "Settled", "check", "settle"]


@dataclass
class CheckResult:
    violations: list[str] = field(default_factory=list)
    resolved: Counter[str] = field(default_factory=Counter)
    effects: int = 0


@dataclass
class Settled:
    """How the system settled once the faults stopped."""

    #: Seconds it took; None when the bound passed first.
    seconds: float | None
    #: What it was still waiting for when the bound passed.
    waiting_for: list[str] = field(default_factory=list)


async def settle(topology: Topology, http: aiohttp.ClientSession, bound: float) -> Settled:
    """Wait until nothing is unfinished at the coordinators or in doubt at a participant,
    and every replica is ready."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    waiting: list[str] = ["an answer"]
    async with CoordinatorClient(topology.coordinator_urls, timeout=5, token=topology.tokens["reader"]) as client:
        while loop.time() - start < bound:
            try:
                waiting = []
                for state in ("active", "preparing", "committing", "aborting"):
                    for tx in (await client.list(state=state, limit=3))["transactions"]:
                        waiting.append(f"{tx['gtid']} {state}")
                for participant in topology.participants.values():
                    in_doubt = await participant.in_doubt(http)
                    if in_doubt != 0:
                        waiting.append(f"{participant.name}: {'no answer' if in_doubt is None else in_doubt} in doubt")
                for name in topology.replicas:
                    async with http.get(f"{topology.url(name)}/readyz") as response:
                        if response.status != 200:
                            waiting.append(f"{name} not ready")
                if not waiting:
                    return Settled(loop.time() - start)
            except (aiohttp.ClientError, CoordinatorError, TimeoutError) as exc:
                waiting = [f"an answer ({type(exc).__name__})"]
            await asyncio.sleep(0.2)
    return Settled(None, waiting)


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
    if "one_outcome" in wanted:
        await _one_outcome(topology, history, everywhere, effects, report)
    if "one_transaction_per_key" in wanted:
        await _one_transaction_per_key(topology, http, history, report)
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
    """What the coordinators say of every transaction whose client heard nothing."""
    final: dict[str, str] = {}
    async with CoordinatorClient(topology.coordinator_urls, timeout=10, token=topology.tokens["reader"]) as client:
        for txn in history:
            if txn.outcome != "unknown" or txn.gtid is None:
                continue
            outcome = await _outcome(client, txn.gtid)
            final[txn.gtid] = outcome
            result.resolved[outcome] += 1
    return final


async def _outcome(client: CoordinatorClient, gtid: str) -> str:
    return (await _answer(client, gtid))[0]


async def _answer(client: CoordinatorClient, gtid: str) -> tuple[str, str]:
    """The outcome a replica gives, and what it said in full (for a report)."""
    try:
        view = await client.get(gtid)
    except CoordinatorError as exc:
        if exc.status != 404:
            raise
        return "aborted", "no record"  # presumed abort
    outcome = str(view.outcome or "undecided")
    return outcome, f"{outcome} (state {view.state}, updated {view.updated_at})"


async def _one_outcome(
    topology: Topology,
    history: list[Txn],
    everywhere: set[str],
    effects: dict[str, Counter[str]],
    report: Callable[[str, str], None],
) -> None:
    """Ask every replica about every transaction: one outcome, the one the effects show."""
    gtids = sorted({gtid for txn in history for gtid in txn.gtids} | {t.gtid for t in history if t.gtid})
    limit = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:
        clients = {
            url: CoordinatorClient(url, session, timeout=10, token=topology.tokens["reader"])
            for url in topology.coordinator_urls
        }

        async def ask(client: CoordinatorClient, gtid: str) -> tuple[str, str]:
            async with limit:
                return await _answer(client, gtid)

        answers = {url: await asyncio.gather(*(ask(client, gtid) for gtid in gtids)) for url, client in clients.items()}
    for index, gtid in enumerate(gtids):
        said = {url: answers[url][index] for url in clients}
        outcomes = {outcome for outcome, _ in said.values()}
        if len(outcomes) > 1:
            told = [t.outcome for t in history if gtid in t.gtids]
            detail = {url: full for url, (_, full) in said.items()}
            report("one_outcome", f"{gtid}: the replicas disagree: {detail}; its client was told {told}")
            continue
        (outcome,) = outcomes
        anywhere = any(counted[gtid] for counted in effects.values())
        if outcome == "committed" and gtid not in everywhere:
            report("one_outcome", f"{gtid} is committed at the coordinators but not at every participant")
        elif outcome != "committed" and anywhere:
            report("one_outcome", f"{gtid} is {outcome} at the coordinators but took effect")


async def _one_transaction_per_key(
    topology: Topology, http: aiohttp.ClientSession, history: list[Txn], report: Callable[[str, str], None]
) -> None:
    for txn in history:
        if len(txn.gtids) > 1:
            report("one_transaction_per_key", f"Idempotency-Key {txn.key} began {sorted(txn.gtids)}")
    for name, participant in topology.participants.items():
        by_tag = await participant.gtids_by_tag(http)
        for tag, gtids in (by_tag or {}).items():
            if len(gtids) > 1:
                report("one_transaction_per_key", f"the work of {tag} came to {name} from {sorted(gtids)}")
