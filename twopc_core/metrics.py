"""Prometheus metrics shared by the coordinator and the participant SDK.

Two kinds of figure, two costs:

- Counts and gauges are plain numbers the code keeps anyway (an ``int`` bumped on the
  hot path, the size of a dict), read only when ``/metrics`` is scraped, by a
  :class:`ScrapeCollector`. They cost nothing between scrapes.
- Latency and size distributions are ``prometheus_client`` histograms, observed on
  the hot path. :class:`Histograms` hands them out, or, with metrics switched off,
  stand-ins that observe nothing, so the off switch removes their cost entirely.

The exposition is ``prometheus_client``'s, in the format the scraper asks for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "Histograms",
    "Observer",
    "ScrapeCollector",
    "metrics_handler",
    "metrics_response",
    "totals",
]

#: Seconds, from a loopback exchange (a fraction of a millisecond) to a stuck call.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: How many things one batch carried: a lone call up to a full batch.
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Observer(Protocol):
    """One histogram's series: what the hot path calls."""

    def observe(self, amount: float) -> None: ...


class _Discarded:
    def observe(self, amount: float) -> None:
        pass


_DISCARDED = _Discarded()


class Histograms:
    """The histograms of one registry, or, when ``enabled`` is false, stand-ins that
    observe nothing (and are not exposed)."""

    def __init__(self, registry: CollectorRegistry, enabled: bool = True) -> None:
        self.registry = registry
        self.enabled = enabled
        self._families: dict[str, Histogram] = {}

    def series(
        self,
        name: str,
        documentation: str,
        labels: dict[str, str] | None = None,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Observer:
        """The series of histogram ``name`` with these label values. Ask once and keep
        it: finding a labelled child costs a lookup on every call otherwise."""
        if not self.enabled:
            return _DISCARDED
        labels = labels or {}
        family = self._families.get(name)
        if family is None:
            family = Histogram(name, documentation, list(labels), registry=self.registry, buckets=buckets)
            self._families[name] = family
        return family.labels(**labels) if labels else family


class ScrapeCollector(Collector):
    """Metric families made when scraped, from the numbers the code keeps anyway."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def totals(exposition_text: str) -> dict[str, float]:
    """A scrape's counters and gauges, each summed over its label values, by family
    name (a counter's without ``_total``); histograms are left out."""
    summed: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition_text):
        # A histogram's creation time reads back as a gauge family of its own.
        if family.type not in ("counter", "gauge") or family.name.endswith("_created"):
            continue
        summed[family.name] = sum(sample.value for sample in family.samples if not sample.name.endswith("_created"))
    return summed


def metrics_response(registry: CollectorRegistry, request: web.Request) -> web.Response:
    """``registry``'s metrics in the format the scraper asks for (OpenMetrics or the
    Prometheus text format)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept") or "")
    response = web.Response(body=encoder(registry))
    response.headers["Content-Type"] = content_type
    return response


def metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``registry``."""

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response(registry, request)

    return metrics
