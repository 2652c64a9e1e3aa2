"""W3C trace context for calls, and optional OpenTelemetry spans (the ``otel`` extra).

A client may send ``traceparent`` on the WebSocket upgrade or on ``POST /function-call``; a valid one travels
in each call's job (``CallJob.traceparent``) and in the log context, so a worker's lines join the client's
trace. An invalid one is ignored: tracing never refuses a call.

Spans are exported only when OpenTelemetry is installed (``pip install voice-function-gateway[otel]``) *and*
the standard environment configures an exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` other than ``none``). Otherwise :func:`span`
costs a function call and imports nothing. The gateway opens a ``session`` span (the client's traceparent as
parent) and a ``call`` span in it; the call span's context is what the job carries, so a worker's ``run`` span,
opened with ``span("run", job.traceparent)``, is its child.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")

_tracer: Any = None
"""The OpenTelemetry tracer once :func:`setup_tracing` enabled one; None: spans are off."""


def valid_traceparent(value: str | None) -> str:
    """``value`` when it is a W3C ``traceparent`` of version 00 (lowercase hex, trace and span ids not all
    zeros), else ``""``."""
    match = TRACEPARENT.match(value or "")
    if match is None or not match.group(1).strip("0") or not match.group(2).strip("0"):
        return ""
    return value or ""


def traceparent_of(headers: Mapping[str, str]) -> str:
    """The valid ``traceparent`` header of a request, or ``""`` (header names in any case)."""
    for name, value in headers.items():
        if name.lower() == "traceparent":
            return valid_traceparent(value.strip())
    return ""


def exporter_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the standard OTEL_* environment asks for spans to be exported."""
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in EXPORTER_VARIABLES)


def setup_tracing(service: str, exporter: Any = None) -> bool:
    """Export spans as ``service`` when OpenTelemetry is installed and configured (or to ``exporter``, a span
    exporter tests pass); return whether spans are on. Call once per process, before any :func:`span`."""
    global _tracer
    if exporter is None and not exporter_configured():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("voice-function-gateway")
    return True


def stop_tracing() -> None:
    """Spans off again (tests)."""
    global _tracer
    _tracer = None


@contextmanager
def span(name: str, parent: str = "", **attributes: str | int | float | bool) -> Iterator[str]:
    """A span named ``name`` for the block, child of ``parent`` (a traceparent) or else of the current span;
    yields the traceparent to hand on: the span's own when spans are on, ``parent`` unchanged when they are off.
    """
    if _tracer is None:
        yield parent
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    context = propagator.extract({"traceparent": parent}) if parent else None
    with _tracer.start_as_current_span(name, context=context, attributes=attributes):
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        yield carrier.get("traceparent", parent)
