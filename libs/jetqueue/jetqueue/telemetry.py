"""Tracing helpers: W3C trace context carried in NATS headers, and tracer setup.

Tracing is off unless ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set (the standard OpenTelemetry variables); the API calls below are cheap
no-ops without a configured provider.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

log = logging.getLogger(__name__)

TRACER_NAME = "jetqueue"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


_MISSING = object()
_seen: object = _MISSING
_enabled = False


def enabled() -> bool:
    """Whether spans go anywhere: a configured SDK provider (``setup_tracing``), not the API's no-op.

    Hot paths ask it to skip span and context work per job when nothing
    consumes it. ``get_tracer_provider()`` reads the environment on every
    call, so the answer is kept for as long as the global provider object is
    the same one (read straight from the API module, where it lives).
    """
    global _seen, _enabled
    current = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if current is _MISSING or current is not _seen:
        _seen = current
        provider = trace.get_tracer_provider()
        _enabled = not isinstance(provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider))
    return _enabled


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add ``traceparent``/``tracestate`` of the current span to NATS headers."""
    propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """Context of the producer's span, from a message's headers."""
    return propagate.extract(dict(headers or {}))


def setup_tracing(service_name: str) -> None:
    """Install an SDK tracer provider when OTEL_* variables ask for export."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and exporter_name in ("", "none"):
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* variables ask for traces, but opentelemetry-sdk is not installed (jetqueue[otel])")
        return

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTLP endpoint set but opentelemetry-exporter-otlp-proto-http is not installed")
            return
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def flush() -> None:
    """Export what is buffered and stop the provider (short-lived processes: the CLI)."""
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if shutdown is not None:
        shutdown()
