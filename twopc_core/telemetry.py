"""Logging and tracing set-up shared by the coordinator and participant services.

Logs are structlog key-value lines on stderr. Tracing uses the OpenTelemetry SDK, so
every coordinator→participant call carries a W3C ``traceparent``; spans are exported
only when ``OTEL_TRACES_EXPORTER=console`` asks for it (an OTLP exporter is the
user's to add).
"""

from __future__ import annotations

import logging
import os
import sys

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

__all__ = ["ensure_tracing", "records_root_spans", "unrecorded_root_span", "setup"]

#: Whether a span with no sampled parent is recorded; only :func:`ensure_tracing` knows
#: it is not (an application's own provider may record anything).
_records_roots = True
_ids = RandomIdGenerator()


def setup(service_name: str, level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False)
            if sys.stderr.isatty()
            else structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    ensure_tracing(service_name)


def ensure_tracing(service_name: str) -> None:
    """Install an SDK tracer provider unless the application installed one already.

    Without one, OpenTelemetry's default provider makes no spans and so no
    ``traceparent``; with one, every call carries it even when nothing is exported.
    With no exporter, spans are not recorded (they would cost a tenth of the
    coordinator's CPU for nothing), but their ids still travel, so a caller's trace
    continues through twopc; ``OTEL_TRACES_SAMPLER`` still chooses when it is set.
    """
    global _records_roots
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporting = os.environ.get("OTEL_TRACES_EXPORTER") == "console"
    sampler = None if exporting or os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(ALWAYS_OFF)
    _records_roots = sampler is None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=sampler)
    if exporting:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def records_root_spans() -> bool:
    """Whether a span started without a sampled parent would be recorded."""
    return _records_roots


def unrecorded_root_span() -> trace.Span:
    """A span that records nothing but has ids of its own: a trace for calls to carry
    when nothing would record one, at a fraction of what starting a span costs."""
    context = trace.SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(), is_remote=False)
    return trace.NonRecordingSpan(context)
