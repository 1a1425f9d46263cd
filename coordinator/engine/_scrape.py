"""The coordinator's counts and gauges, made when ``/metrics`` is scraped.

Read from the numbers the driver, the transport and the log keep anyway, so they
cost nothing between scrapes; the histograms are in :mod:`coordinator.metrics`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from coordinator.engine._driver import Coordinator

__all__ = ["coordinator_families"]

_OUTCOMES = ("committed", "aborted")
_HEALTH = ("ok", "unreachable", "unknown")


def coordinator_families(coordinator: Coordinator, clock: Callable[[], float] = time.time) -> Iterator[Metric]:
    """Every count and gauge of ``coordinator``, as of now."""
    now = clock()
    outcomes = CounterMetricFamily(
        "twopc_transactions", "Transactions decided by this replica, by outcome.", labels=["outcome"]
    )
    for outcome in _OUTCOMES:
        outcomes.add_metric([outcome], coordinator.outcomes[outcome])
    yield outcomes
    yield CounterMetricFamily("twopc_transactions_begun", "Transactions begun at this replica.", coordinator.begun)
    yield CounterMetricFamily(
        "twopc_transactions_recovered",
        "Unfinished transactions taken from the log at start or by a takeover.",
        coordinator.recovered,
    )

    backlog = coordinator.backlog()
    yield GaugeMetricFamily(
        "twopc_unfinished_transactions", "Transactions in memory not yet finished.", backlog.unfinished
    )
    yield GaugeMetricFamily(
        "twopc_in_doubt_transactions",
        "Decided transactions some branch has not acknowledged phase 2 of (its participant is in doubt).",
        backlog.in_doubt,
    )
    yield _age(
        "twopc_oldest_unfinished_age_seconds",
        "Age of the oldest unfinished transaction.",
        backlog.oldest_unfinished_at,
        now,
    )
    yield _age(
        "twopc_oldest_in_doubt_age_seconds", "Age of the oldest in-doubt transaction.", backlog.oldest_in_doubt_at, now
    )

    stats = coordinator.log_stats()
    yield CounterMetricFamily("twopc_decisions_logged", "Decisions forced to the log.", stats["decisions_logged"])
    yield CounterMetricFamily("twopc_log_commits", "Commits (fsyncs) of the decision log.", stats["log_commits"])
    yield CounterMetricFamily(
        "twopc_heuristics_found",
        "Branches found forced by an operator against their transaction's decision.",
        coordinator.heuristics,
    )
    yield from _participant_families(coordinator, now)
    yield from _replica_families(coordinator)


def _participant_families(coordinator: Coordinator, now: float) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "twopc_participant_calls", "Protocol calls made to each participant.", labels=["participant"]
    )
    exchanges = CounterMetricFamily(
        "twopc_participant_exchanges", "Exchanges (HTTP or channel) that carried those calls.", labels=["participant"]
    )
    over_channel = CounterMetricFamily(
        "twopc_participant_channel_exchanges",
        "Of those exchanges, the ones sent as frames over the participant's channel.",
        labels=["participant"],
    )
    channel_open = GaugeMetricFamily(
        "twopc_participant_channel_open",
        "Whether the channel to the participant is open (1) or its calls go over HTTP (0).",
        labels=["participant"],
    )
    failed = CounterMetricFamily(
        "twopc_participant_exchange_failures",
        "Exchanges that got no usable answer (timeout, connection error, not the protocol).",
        labels=["participant"],
    )
    retries = CounterMetricFamily(
        "twopc_phase_two_retries", "Phase-2 calls sent again after one was not acknowledged.", labels=["participant"]
    )
    up = GaugeMetricFamily(
        "twopc_participant_up",
        "Whether the last exchange with the participant got an answer (1), or failed (0); absent before any.",
        labels=["participant"],
    )
    health = GaugeMetricFamily(
        "twopc_participant_health",
        "The participant's health as the last exchange saw it.",
        labels=["participant", "status"],
    )
    since = GaugeMetricFamily(
        "twopc_participant_last_exchange_age_seconds",
        "Time since the last exchange with the participant.",
        labels=["participant"],
    )
    for name, counts in coordinator.endpoint_counts().items():
        calls.add_metric([name], counts.calls)
        exchanges.add_metric([name], counts.exchanges)
        over_channel.add_metric([name], counts.channel_exchanges)
        channel_open.add_metric([name], 1.0 if counts.channel_open else 0.0)
        failed.add_metric([name], counts.failed_exchanges)
        retries.add_metric([name], counts.phase_two_retries)
        seen = coordinator.participant_health(name)
        for status in _HEALTH:
            health.add_metric([name, status], 1.0 if seen["status"] == status else 0.0)
        if seen["checked_at"] is not None:
            up.add_metric([name], 1.0 if seen["status"] == "ok" else 0.0)
            since.add_metric([name], max(0.0, now - seen["checked_at"]))
    yield from (calls, exchanges, over_channel, channel_open, failed, retries, up, health, since)


def _replica_families(coordinator: Coordinator) -> Iterator[Metric]:
    membership = coordinator.membership
    yield GaugeMetricFamily(
        "twopc_replica_ready",
        "Whether this replica holds a live lease on a log that answers.",
        1.0 if coordinator.ready else 0.0,
    )
    if membership.shared:
        yield GaugeMetricFamily(
            "twopc_replica_lease_remaining_seconds",
            "How long this replica's lease is surely live still, by its own clock.",
            membership.lease_remaining,
        )
        yield GaugeMetricFamily(
            "twopc_replica_epoch",
            "This replica's epoch (a new one at every join).",
            membership.me.epoch if membership.me else 0,
        )
        alive = sum(1 for replica in membership.replicas.values() if replica.alive)
        yield GaugeMetricFamily("twopc_replicas_alive", "Replicas whose lease the log last showed live.", alive)
        yield CounterMetricFamily("twopc_takeovers", "Replicas this one took over.", membership.takeovers)


def _age(name: str, documentation: str, since: float | None, now: float) -> GaugeMetricFamily:
    # 0 when there is nothing: an alert on "older than N seconds" stays quiet then.
    return GaugeMetricFamily(
        name, documentation, 0.0 if since is None or not math.isfinite(since) else max(0.0, now - since)
    )
