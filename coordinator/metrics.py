"""What the coordinator measures of itself, exposed at ``/metrics``.

The histograms are observed where the work happens (the driver, the transport, the
log's writer); the counts and gauges are read from the numbers those parts keep
anyway, when a scrape asks (see :mod:`coordinator.engine._scrape`). Label values are
bounded: a phase, an operation of the protocol, a registered participant's name —
never a gtid.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from twopc_core.metrics import SIZE_BUCKETS, Histograms, Observer

__all__ = ["PHASES", "CoordinatorMetrics"]

#: The phases of a transaction timed by ``twopc_phase_duration_seconds``: the prepare
#: round, the forced decision, and phase 2 (commit or abort).
PHASES = ("prepare", "decision", "commit", "abort")


class CoordinatorMetrics:
    """The coordinator's histograms, in one registry (one per coordinator, so several
    can share a process). ``enabled=False`` observes none of them (``/metrics`` then
    shows only the counts and gauges, which cost nothing between scrapes)."""

    def __init__(self, enabled: bool = True, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._histograms = Histograms(self.registry, enabled)
        h = self._histograms
        self.commit_seconds = h.series(
            "twopc_commit_duration_seconds",
            "From a client's commit request to its answer (the decision, and phase 2 within commit_wait_ms).",
        )
        self.phase_seconds: dict[str, Observer] = {
            phase: h.series(
                "twopc_phase_duration_seconds",
                "How long each phase of a transaction took: the prepare round, the forced "
                "decision, phase 2 until every branch acknowledged.",
                {"phase": phase},
            )
            for phase in PHASES
        }
        self.log_commit_seconds = h.series(
            "twopc_log_commit_duration_seconds", "How long one commit of the decision log took (one fsync)."
        )
        self.log_commit_forced_writes = h.series(
            "twopc_log_commit_forced_writes",
            "Forced writes (decisions, one-phase records, ends) made durable by one log commit.",
            buckets=SIZE_BUCKETS,
        )

    @property
    def enabled(self) -> bool:
        return self._histograms.enabled

    def exchange_seconds(self, participant: str, operation: str) -> Observer:
        return self._histograms.series(
            "twopc_participant_exchange_duration_seconds",
            "One HTTP exchange with a participant: a lone operation, or a batch of them.",
            {"participant": participant, "operation": operation},
        )

    def exchange_calls(self, participant: str) -> Observer:
        return self._histograms.series(
            "twopc_participant_exchange_calls",
            "How many protocol calls one exchange with a participant carried.",
            {"participant": participant},
            buckets=SIZE_BUCKETS,
        )

    def log_committed(self, seconds: float, forced_writes: int) -> None:
        """The log's writer committed a batch: what its commit observer calls."""
        self.log_commit_seconds.observe(seconds)
        self.log_commit_forced_writes.observe(forced_writes)
