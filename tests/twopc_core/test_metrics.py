"""The shared metrics helpers: histograms that can be switched off, scrape-time
collectors, reading a scrape back."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from twopc_core.metrics import Histograms, ScrapeCollector, totals


def test_a_histogram_series_is_asked_for_once_and_observes() -> None:
    registry = CollectorRegistry()
    histograms = Histograms(registry)
    fast = histograms.series("work_seconds", "Work.", {"kind": "fast"})
    slow = histograms.series("work_seconds", "Work.", {"kind": "slow"})
    fast.observe(0.001)
    slow.observe(2.0)
    slow.observe(3.0)
    assert registry.get_sample_value("work_seconds_count", {"kind": "fast"}) == 1
    assert registry.get_sample_value("work_seconds_count", {"kind": "slow"}) == 2


def test_switched_off_a_histogram_observes_nothing_and_is_not_exposed() -> None:
    registry = CollectorRegistry()
    Histograms(registry, enabled=False).series("work_seconds", "Work.").observe(1.0)
    assert b"work_seconds" not in generate_latest(registry)


def test_a_scrape_collector_reads_its_numbers_at_each_scrape() -> None:
    registry = CollectorRegistry()
    held = {"n": 1}
    registry.register(ScrapeCollector(lambda: [GaugeMetricFamily("held", "Held.", held["n"])]))
    assert registry.get_sample_value("held") == 1
    held["n"] = 5
    assert registry.get_sample_value("held") == 5


def test_totals_sum_a_counter_over_its_labels_and_leave_histograms_out() -> None:
    registry = CollectorRegistry()
    calls = CounterMetricFamily("calls", "Calls.", labels=["to"])
    calls.add_metric(["a"], 2)
    calls.add_metric(["b"], 3)
    registry.register(ScrapeCollector(lambda: [calls]))
    Histograms(registry).series("work_seconds", "Work.").observe(1.0)
    assert totals(generate_latest(registry).decode()) == {"calls": 5.0}
