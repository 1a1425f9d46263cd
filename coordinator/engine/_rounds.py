"""The spans of one transaction's protocol rounds.

Rounds run in tasks of their own and may outlive the request that began them (a
commit is answered once decided, phase 2 may go on), so their spans begin and end
as the machine moves rather than around a block: the prepare round from the first
prepare sent until every vote is in (or the transaction aborts), the commit (or abort)
round from the first phase-2 message until every branch acknowledged. Both are
children of the context current when the first of them began, which is the client's
request; the forced decision between them is their sibling.
"""

from __future__ import annotations

from opentelemetry import context, trace
from opentelemetry.context import Context

from twopc_core.protocol import Outcome, Vote

__all__ = ["RoundSpans"]

tracer = trace.get_tracer("coordinator.engine")


class RoundSpans:
    """A transaction's round spans; made only while something records them."""

    __slots__ = ("_gtid", "_phase_two", "_prepare", "parent")

    def __init__(self, gtid: str) -> None:
        self._gtid = gtid
        #: Where the rounds belong: the context current when the first one began.
        self.parent: Context = context.get_current()
        self._prepare: trace.Span | None = None
        self._phase_two: trace.Span | None = None

    def prepare_round(self, branches: int) -> Context:
        """The context prepares are sent in: the prepare round's span, begun now."""
        if self._prepare is None:
            self._prepare = tracer.start_span(
                "coordinator.prepare_round",
                context=self.parent,
                attributes={"twopc.gtid": self._gtid, "twopc.branches": branches},
            )
        return trace.set_span_in_context(self._prepare, self.parent)

    def decision(self) -> Context:
        """Every branch voted yes: the prepare round is over, the decision is forced
        beside it, in the returned context."""
        self.end_prepare(Vote.YES)
        return self.parent

    def phase_two(self, outcome: Outcome, branches: int) -> Context:
        """The context phase 2 is sent in: the commit (or abort) round's span."""
        self.end_prepare(Vote.YES if outcome is Outcome.COMMITTED else None)
        if self._phase_two is None:
            self._phase_two = tracer.start_span(
                "coordinator.commit_round" if outcome is Outcome.COMMITTED else "coordinator.abort_round",
                context=self.parent,
                attributes={"twopc.gtid": self._gtid, "twopc.outcome": outcome.value, "twopc.branches": branches},
            )
        return trace.set_span_in_context(self._phase_two, self.parent)

    def end_prepare(self, vote: Vote | None) -> None:
        """End the prepare round, if it runs: every branch voted yes, or (``None``) the
        transaction aborts, on a no vote, the client's word or its deadline."""
        if self._prepare is not None:
            if vote is None:
                self._prepare.set_attribute("twopc.outcome", Outcome.ABORTED.value)
            else:
                self._prepare.set_attribute("twopc.vote", vote.value)
            self._prepare.end()
            self._prepare = None

    def end(self, outcome: Outcome | None) -> None:
        """The transaction is finished (``outcome``) or no longer driven here (``None``):
        end whatever round still runs."""
        if self._prepare is not None:
            self.end_prepare(Vote.YES if outcome is Outcome.COMMITTED else None)
        if self._phase_two is not None:
            if outcome is None:
                self._phase_two.set_attribute("twopc.dropped", True)
            self._phase_two.end()
            self._phase_two = None
