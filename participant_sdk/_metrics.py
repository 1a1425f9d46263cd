"""What a participant measures of itself, for its service's ``/metrics``.

The SDK provides them; an adapter adds its own to the same registry
(:attr:`Participant.metrics_registry`). As on the coordinator, counts and gauges are
read from numbers kept anyway when a scrape asks, and only the latency histograms
are observed on the hot path (not at all with metrics switched off).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from participant_sdk.log import ParticipantLog
from twopc_core.metrics import Histograms, ScrapeCollector
from twopc_core.protocol import Outcome, Vote

__all__ = ["ParticipantMetrics"]


class ParticipantMetrics:
    """The figures of one participant, in ``registry`` (a new one by default)."""

    def __init__(self, participant: str, *, enabled: bool = True, registry: CollectorRegistry | None = None) -> None:
        self.participant = participant
        self.registry = registry if registry is not None else CollectorRegistry()
        histograms = Histograms(self.registry, enabled)
        self.prepare_seconds = histograms.series(
            "twopc_branch_prepare_duration_seconds",
            "From a prepare's arrival to its vote, the resource's prepare and the durable log write included.",
        )
        self.phase_two_seconds = {
            outcome: histograms.series(
                "twopc_branch_phase_two_duration_seconds",
                "From a commit or abort's arrival to its answer.",
                {"outcome": outcome.value},
            )
            for outcome in Outcome
        }
        #: Votes given, and outcomes applied at the resource (by phase 2, an inquiry or an operator).
        self.votes: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        #: Outcomes an operator forced here (heuristic).
        self.forced = 0
        #: Inquiries to the coordinator about in-doubt branches, by what they found.
        self.inquiries: Counter[str] = Counter()

    def watch(
        self, log: ParticipantLog, inquiry_rounds: Callable[[], int], clock: Callable[[], float] = time.time
    ) -> None:
        """Expose these figures with the in-doubt ones read from ``log`` when scraped."""
        self.registry.register(ScrapeCollector(lambda: self._families(log, inquiry_rounds(), clock())))

    def _families(self, log: ParticipantLog, rounds: int, now: float) -> Iterator[Metric]:
        info = GaugeMetricFamily("twopc_participant_info", "The participant this service is.", labels=["participant"])
        info.add_metric([self.participant], 1.0)
        yield info
        votes = CounterMetricFamily("twopc_branch_votes", "Votes given at prepare, by vote.", labels=["vote"])
        for vote in Vote:
            votes.add_metric([vote.value], self.votes[vote.value])
        yield votes
        outcomes = CounterMetricFamily(
            "twopc_branches", "Branches finished at the resource, by outcome.", labels=["outcome"]
        )
        for outcome in Outcome:
            outcomes.add_metric([outcome.value], self.outcomes[outcome.value])
        yield outcomes
        yield CounterMetricFamily(
            "twopc_branches_forced", "Branches an operator forced to an outcome here (heuristic).", self.forced
        )
        yield GaugeMetricFamily(
            "twopc_in_doubt_branches",
            "Branches prepared here that have not heard their outcome yet.",
            log.in_doubt_count,
        )
        oldest = log.oldest_prepared_at()
        yield GaugeMetricFamily(
            "twopc_oldest_in_doubt_branch_age_seconds",
            "Age of the oldest in-doubt branch (0 when there is none).",
            0.0 if oldest is None else max(0.0, now - oldest),
        )
        yield CounterMetricFamily(
            "twopc_inquiry_rounds",
            "Rounds of the in-doubt loop (asking the coordinator about in-doubt branches).",
            rounds,
        )
        inquiries = CounterMetricFamily(
            "twopc_inquiries",
            "In-doubt branches asked about, by what came of it (undecided: they wait; unreachable: no answer).",
            labels=["result"],
        )
        for result in ("committed", "aborted", "undecided", "unreachable", "failed"):
            inquiries.add_metric([result], self.inquiries[result])
        yield inquiries
