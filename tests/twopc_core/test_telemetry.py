"""Logs: the processor chain and its renderers; tracing: what the OTEL_* variables turn on.

The tracer provider is global and set once per process, so what ``ensure_tracing``
installs is looked at in a fresh interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from twopc_core import telemetry

ROOT = Path(__file__).resolve().parents[2]


def render(log_format: telemetry.LogFormat, tty: bool = False, **event: object) -> str:
    logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=telemetry.log_processors(log_format, tty))
    line: str = logger.info("branch prepared", **event)
    return line


def test_a_json_line_parses_and_has_the_gtid_and_the_recording_spans_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = render("json", gtid="c1-abc", participant="queue-a")

    parsed = orjson.loads(line)
    context = span.get_span_context()
    assert parsed["event"] == "branch prepared"
    assert parsed["gtid"] == "c1-abc"
    assert parsed["level"] == "info"
    assert parsed["trace_id"] == format(context.trace_id, "032x")
    assert parsed["span_id"] == format(context.span_id, "016x")
    assert parsed["timestamp"].endswith("Z")


def test_a_line_outside_any_span_has_no_trace_id() -> None:
    parsed = orjson.loads(render("json", gtid="c1-abc"))

    assert "trace_id" not in parsed and "span_id" not in parsed


def test_a_span_that_records_nothing_puts_no_ids_in_the_line() -> None:
    from opentelemetry import trace

    with trace.use_span(telemetry.unrecorded_root_span()):
        parsed = orjson.loads(render("json", gtid="c1-abc"))

    assert "trace_id" not in parsed


def test_json_renders_what_orjson_cannot_encode_as_its_text() -> None:
    parsed = orjson.loads(render("json", path=Path("/tmp/x")))

    assert parsed["path"] == "/tmp/x"


def test_auto_is_key_value_lines_off_a_terminal_and_console_lines_on_one() -> None:
    plain = render("auto", tty=False, gtid="g1")
    console = render("auto", tty=True, gtid="g1")

    assert plain.startswith("timestamp=") and "event='branch prepared'" in plain and "gtid='g1'" in plain
    assert "timestamp=" not in console and "branch prepared" in console and "gtid=g1" in console


def test_setup_refuses_an_unknown_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPC_LOG_FORMAT", "xml")

    with pytest.raises(ValueError, match="xml"):
        telemetry.setup("test")


def fresh_interpreter(code: str, **env: str) -> dict[str, object]:
    """Run ``code`` with only ``env`` of the OTEL_* variables set; it prints one JSON line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


_INSPECT = """
import json
from opentelemetry import trace
from twopc_core import telemetry
telemetry.ensure_tracing("twopc-test")
provider = trace.get_tracer_provider()
span = trace.get_tracer("t").start_span("s")
processors = provider._active_span_processor._span_processors
print(json.dumps({
    "recording": span.is_recording(),
    "valid_ids": span.get_span_context().is_valid,
    "records_roots": telemetry.records_root_spans(),
    "service": provider.resource.attributes["service.name"],
    "exporters": [type(p.span_exporter).__name__ for p in processors],
    "endpoint": getattr(processors[0].span_exporter, "_endpoint", None) if processors else None,
}))
"""


def test_without_otel_variables_nothing_is_recorded_or_exported() -> None:
    found = fresh_interpreter(_INSPECT)

    assert found["recording"] is False
    assert found["records_roots"] is False
    assert found["exporters"] == []
    assert found["service"] == "twopc-test"


def test_otlp_exporter_from_the_standard_variables_and_the_service_name_from_the_environment() -> None:
    found = fresh_interpreter(
        _INSPECT,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_SERVICE_NAME="coordinator-east",
    )

    assert found["recording"] is True
    assert found["records_roots"] is True
    assert found["exporters"] == ["OTLPSpanExporter"]
    assert found["endpoint"] == "http://127.0.0.1:4318/v1/traces"
    assert found["service"] == "coordinator-east"


def test_the_sampler_variable_is_the_sdks_to_read() -> None:
    found = fresh_interpreter(_INSPECT, OTEL_TRACES_EXPORTER="otlp,console", OTEL_TRACES_SAMPLER="always_off")

    assert found["recording"] is False
    assert found["records_roots"] is False
    assert found["exporters"] == ["OTLPSpanExporter", "ConsoleSpanExporter"]


def test_an_unknown_exporter_is_refused_by_name() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        fresh_interpreter(_INSPECT, OTEL_TRACES_EXPORTER="zipkin")

    assert "zipkin" in failed.value.stderr


def test_a_libraries_stdlib_log_record_renders_as_a_json_line_too() -> None:
    formatter = telemetry.stdlib_formatter(telemetry.log_processors("json", tty=False))
    try:
        raise RuntimeError("pool broke")
    except RuntimeError:
        record = logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, "error connecting", (), sys.exc_info())

    parsed = orjson.loads(formatter.format(record))
    assert parsed["event"] == "error connecting"
    assert parsed["level"] == "warning"
    assert parsed["logger"] == "psycopg.pool"
    assert "RuntimeError: pool broke" in parsed["exception"]
