"""Logging and tracing set-up shared by the coordinator and participant services.

Logs are structlog lines on stderr: JSON (``TWOPC_LOG_FORMAT=json``), readable console
lines (``console``), or by default (``auto``) console lines on a terminal and
``key=value`` lines elsewhere. Inside a span that records, each line carries its
``trace_id`` and ``span_id``.

Tracing uses the OpenTelemetry SDK, so every coordinator→participant call carries a
W3C ``traceparent``. Spans are exported when the standard variables ask for it:
``OTEL_TRACES_EXPORTER=otlp`` (OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, read by the SDK's exporter), ``console``, or
both (``otlp,console``); ``OTEL_SERVICE_NAME`` names the service and
``OTEL_TRACES_SAMPLER`` (with ``OTEL_TRACES_SAMPLER_ARG``) samples, as the SDK reads them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, cast, get_args

import orjson
import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

__all__ = [
    "LogFormat",
    "add_trace_ids",
    "ensure_tracing",
    "log_processors",
    "records_root_spans",
    "recording",
    "setup",
    "shutdown",
    "stdlib_formatter",
    "unrecorded_root_span",
]

LogFormat = Literal["auto", "json", "console"]

#: Whether a span with no sampled parent is recorded; only :func:`ensure_tracing` knows
#: it is not (an application's own provider may record anything).
_records_roots = True
_ids = RandomIdGenerator()
#: The provider :func:`ensure_tracing` installed, which :func:`shutdown` flushes.
_installed: TracerProvider | None = None

#: Samplers that record no root span, whatever the exporter.
_NO_ROOTS = frozenset({"always_off", "parentbased_always_off"})


def setup(service_name: str, level: str = "info", log_format: LogFormat | None = None) -> None:
    """Configure logging (once per process) and tracing for a service.

    ``log_format`` defaults to ``TWOPC_LOG_FORMAT``, else ``auto``.
    """
    chosen = log_format or os.environ.get("TWOPC_LOG_FORMAT", "auto") or "auto"
    if chosen not in get_args(LogFormat):
        raise ValueError(f"log format must be one of {', '.join(get_args(LogFormat))}, not {chosen!r}")
    numeric = logging.getLevelName(level.upper())
    processors = log_processors(cast(LogFormat, chosen), tty=sys.stderr.isatty())
    # The libraries' stdlib log lines in the same shape (a JSON log stays all JSON).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(stdlib_formatter(processors))
    logging.basicConfig(level=numeric, handlers=[handler])
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    ensure_tracing(service_name)


def log_processors(log_format: LogFormat, tty: bool) -> list[Any]:
    """structlog's processor chain for ``log_format``, the renderer last."""
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
    elif log_format == "console" or tty:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.format_exc_info,
        renderer,
    ]


def stdlib_formatter(processors: list[Any]) -> logging.Formatter:
    """A :mod:`logging` formatter that renders a record as ``processors`` (from
    :func:`log_processors`) render structlog's events, with the logger's name."""
    *chain, renderer = processors
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *chain],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def _json_line(event: Any, **_: Any) -> str:
    # orjson: several times faster than json; anything it cannot encode becomes its str().
    return orjson.dumps(event, default=str).decode()


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids, when that span records (an id
    nobody records leads nowhere)."""
    span = trace.get_current_span()
    if span.is_recording():
        context = span.get_span_context()
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def ensure_tracing(service_name: str) -> None:
    """Install an SDK tracer provider unless the application installed one already.

    Without one, OpenTelemetry's default provider makes no spans and so no
    ``traceparent``; with one, every call carries it even when nothing is exported.
    With no exporter, spans are not recorded (they would cost a tenth of the
    coordinator's CPU for nothing), but their ids still travel, so a caller's trace
    continues through twopc; ``OTEL_TRACES_SAMPLER`` still chooses when it is set.
    ``OTEL_SERVICE_NAME`` wins over ``service_name``.
    """
    global _records_roots, _installed
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporters = _span_exporters()
    sampler_name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    # sampler=None lets the SDK read OTEL_TRACES_SAMPLER and its argument itself.
    sampler = None if exporters or sampler_name else ParentBased(ALWAYS_OFF)
    _records_roots = sampler is None and sampler_name not in _NO_ROOTS
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _installed = provider


def _span_exporters() -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (a comma-separated list)."""
    exporters: list[SpanExporter] = []
    for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(","):
        match name.strip().lower():
            case "otlp":
                protocol = os.environ.get(
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                )
                if protocol != "http/protobuf":
                    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: twopc exports OTLP over http/protobuf")
                # Imported here: only a process that exports pays for loading it.
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
            case "console":
                exporters.append(ConsoleSpanExporter())
            case "" | "none":
                pass
            case other:
                raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {other!r} (otlp, console or none)")
    return exporters


def shutdown() -> None:
    """Export what is left and stop the provider :func:`ensure_tracing` installed: the
    last spans before a service stops."""
    global _installed
    if _installed is not None:
        _installed.shutdown()
        _installed = None


def records_root_spans() -> bool:
    """Whether a span started without a sampled parent would be recorded."""
    return _records_roots


def recording() -> bool:
    """Whether a span started here would be recorded: the cheap test before making one."""
    return _records_roots or trace.get_current_span().is_recording()


def unrecorded_root_span() -> trace.Span:
    """A span that records nothing but has ids of its own: a trace for calls to carry
    when nothing would record one, at a fraction of what starting a span costs."""
    context = trace.SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(), is_remote=False)
    return trace.NonRecordingSpan(context)
