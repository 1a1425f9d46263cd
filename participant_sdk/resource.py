"""The resource interface: what a participant's local resource manager implements.

The SDK owns the protocol (signatures, idempotency, the participant log, in-doubt
recovery); a resource only has to stage, apply and drop one branch's work.

A resource whose prepare is durable and recoverable on its own, and which can tell
what became of a branch (:attr:`Resource.holds_branch_state`), keeps the branch's
protocol state itself, in the same local transaction as the work: the SDK then makes
no durable write of its own for a vote, and its participant log is a cache of what the
resource holds.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from twopc_core.protocol import BranchStatus, Vote

__all__ = ["PrepareResult", "Resource"]


@dataclass(frozen=True, slots=True)
class PrepareResult:
    vote: Vote
    reason: str | None = None

    @classmethod
    def yes(cls) -> PrepareResult:
        return cls(Vote.YES)

    @classmethod
    def no(cls, reason: str) -> PrepareResult:
        return cls(Vote.NO, reason)

    @classmethod
    def read_only(cls) -> PrepareResult:
        return cls(Vote.READ_ONLY)


class Resource(abc.ABC):
    """A local resource manager taking part in global transactions.

    Each branch is keyed by ``(gtid, branch)``: ``branch`` is the participant's name, a
    transaction's share at this participant. The SDK serialises calls per branch, so an
    implementation need not guard against two calls for one branch at once; calls for
    different gtids run concurrently, so prepares that draw on one shared quantity must
    check and reserve it atomically. The methods run on the event loop: blocking I/O
    goes through ``asyncio.to_thread``. The whole contract, with a worked example:
    ``docs/embedding.md``.
    """

    #: True when :meth:`prepare` leaves the branch durable and listed by :meth:`recover`,
    #: and :meth:`branch_status` tells a committed branch from an unknown one, for as
    #: long as the participant log keeps finished rows: the SDK then writes its own
    #: row of a vote lazily, and asks the resource about a branch its log lost in a crash.
    holds_branch_state: bool = False

    async def start(self) -> None:
        """Open connections, files, ...; called before the participant serves."""

    async def close(self) -> None:
        """Release what :meth:`start` acquired; called after the participant stops."""

    @abc.abstractmethod
    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        """Durably stage the branch's work and vote.

        ``payload`` is the enlistment's, as decoded JSON (dict, list, str, number or
        None); one that cannot be taken is a NO vote (:meth:`PrepareResult.no`).
        A YES vote promises that :meth:`commit` will succeed even after a crash.
        Raising counts as a NO vote with the exception as the reason; after a NO
        vote or an exception the SDK calls :meth:`abort` to drop any partial work.
        """

    @abc.abstractmethod
    async def commit(self, gtid: str, branch: str) -> None:
        """Make the staged work visible. Idempotent: a committed branch stays committed,
        and a branch never staged here is not an error."""

    @abc.abstractmethod
    async def abort(self, gtid: str, branch: str) -> None:
        """Drop the staged work. Idempotent; an unknown branch is not an error."""

    @abc.abstractmethod
    async def recover(self) -> list[tuple[str, str]]:
        """The ``(gtid, branch)`` pairs this resource holds prepared.

        Called at start (after a restart) and then periodically, to find branches
        prepared here that the participant log does not know.
        """

    async def branch_status(self, gtid: str, branch: str) -> BranchStatus:
        """What the resource holds of a branch, for a resource that :attr:`holds_branch_state`:
        ``PREPARED`` while its work is staged, ``COMMITTED`` once its commit is durable,
        ``ABORTED`` if the resource remembers dropping it, else ``UNKNOWN`` (never staged
        here, or dropped). Asked only about a branch the participant log does not know."""
        raise NotImplementedError(f"{type(self).__name__} does not hold its branches' state")

    def branch(self, gtid: str, branch: str) -> AbstractAsyncContextManager[Any]:
        """Early prepare (optional): the context in which the application does a
        branch's work itself, before the coordinator asks for a vote.

        Entering yields what the application works with (for a database, a connection
        inside the branch's local transaction). A clean exit must durably prepare that
        work, the same promise as a YES vote from :meth:`prepare`; an exception must
        drop it and propagate. Use it through :meth:`Participant.branch`, which logs
        the vote and enlists the branch with the coordinator.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support early prepare")
