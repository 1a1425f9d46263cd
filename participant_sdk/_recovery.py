"""The in-doubt loop: a prepared branch that hears no phase 2 asks the coordinator.

The participant never decides on its own: it applies the coordinator's outcome, as
:func:`participant_sdk._branch.outcome_for_branch` reads it from the coordinator's view
(presumed abort for a transaction the coordinator has no record of; abort for a
committed one that does not name the branch). With several coordinator replicas an
inquiry goes to each in turn until one answers (see :class:`CoordinatorClient`): one
replica down or not ready leaves the branch waiting only when none of the others answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog

from participant_sdk import _branch as rules
from participant_sdk._core import BranchHandler
from participant_sdk._rejections import RejectionLog
from participant_sdk.client import CoordinatorClient, CoordinatorError, describe_failure
from twopc_core.protocol import Outcome

__all__ = ["InDoubtResolver", "InquiryRound"]

logger = structlog.get_logger("participant_sdk")

_OUTCOMES = frozenset(outcome.value for outcome in Outcome)


@dataclass
class InquiryRound:
    """What one round of inquiries found."""

    asked: int = 0
    committed: int = 0
    aborted: int = 0
    undecided: int = 0
    #: Branches whose inquiry no coordinator replica answered (they wait for the next round).
    unreachable: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def resolved(self) -> int:
        return self.committed + self.aborted


class InDoubtResolver:
    def __init__(
        self,
        handler: BranchHandler,
        client: CoordinatorClient,
        interval: float,
        *,
        concurrency: int = 16,
        after_round: Callable[[], Awaitable[None]] | None = None,
        rejections: RejectionLog | None = None,
    ) -> None:
        self._handler = handler
        self._rejections = rejections or RejectionLog("")
        self._client = client
        self._interval = interval
        self._concurrency = concurrency
        self._after_round = after_round
        #: Rounds the background loop has finished (for health reports and tests).
        self.rounds = 0

    async def run(self) -> None:
        """Forever: ask about every prepared branch once (right after start), then
        every interval about those prepared longer than the interval."""
        min_age = 0.0
        while True:
            try:
                await self.round(min_age)
            except Exception:
                logger.exception("in-doubt round failed")
            self.rounds += 1
            if self._after_round is not None:
                try:
                    await self._after_round()
                except Exception:
                    logger.exception("participant housekeeping failed")
            min_age = self._interval
            await asyncio.sleep(self._interval)

    async def round(self, min_age: float = 0.0) -> InquiryRound:
        by_gtid: dict[str, list[str]] = {}
        for row in self._handler.log.prepared(min_age):
            by_gtid.setdefault(row.gtid, []).append(row.branch)
        result = InquiryRound()
        if not by_gtid:
            return result
        limit = asyncio.Semaphore(self._concurrency)

        async def settle(gtid: str, branches: list[str]) -> None:
            async with limit:
                await self._settle(gtid, branches, result)

        await asyncio.gather(*(settle(gtid, branches) for gtid, branches in by_gtid.items()))
        inquiries = self._handler.metrics.inquiries
        for outcome in ("committed", "aborted", "undecided", "unreachable", "failed"):
            inquiries[outcome] += getattr(result, outcome)
        if result.unreachable:
            logger.warning(
                "coordinator unreachable; in-doubt branches wait for the next round",
                branches=result.unreachable,
                error=result.errors[0] if result.errors else None,
            )
        return result

    async def _settle(self, gtid: str, branches: list[str], result: InquiryRound) -> None:
        result.asked += len(branches)
        try:
            view = await self._client.get_json(gtid)
        except CoordinatorError as exc:
            if not rules.coordinator_has_no_record(exc.status):
                if exc.status in (401, 403):  # a secret or a name the coordinator does not accept
                    self._rejections.refused(
                        "coordinator refused the participant's inquiry", f"{exc.code}: {exc.message}", gtid=gtid
                    )
                result.unreachable += len(branches)
                result.errors.append(describe_failure(exc))
                return
            view = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            result.unreachable += len(branches)
            result.errors.append(describe_failure(exc))
            return
        _warn_if_unreadable(gtid, view)
        for branch in branches:
            outcome = rules.outcome_for_branch(view, branch)
            if outcome is None:
                result.undecided += 1
                continue
            try:
                applied = await self._handler.resolve(gtid, branch, outcome)
            except Exception as exc:
                result.failed += 1
                result.errors.append(repr(exc))
                logger.warning(
                    "applying the coordinator's outcome failed; retrying next round",
                    gtid=gtid,
                    branch=branch,
                    outcome=outcome.value,
                    error=repr(exc),
                )
                continue
            if applied:
                logger.info("in-doubt branch resolved", gtid=gtid, branch=branch, outcome=outcome.value)
                if outcome is Outcome.COMMITTED:
                    result.committed += 1
                else:
                    result.aborted += 1


def _warn_if_unreadable(gtid: str, view: object) -> None:
    """Say so when the coordinator sends an outcome this SDK cannot read (the branch waits)."""
    outcome = view.get("outcome") if isinstance(view, dict) else None
    if outcome is not None and outcome not in _OUTCOMES:
        logger.warning("coordinator sent an unknown outcome", gtid=gtid, outcome=outcome)
