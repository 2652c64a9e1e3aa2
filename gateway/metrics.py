"""The gateway's Prometheus metrics, served on ``GET /metrics`` (see docs/OPERATIONS.md for the list and alerts).

The metric objects live here, and the gateway's modules record with one line where something happens: a call
finishes (``gateway.dispatcher``), a session starts or ends, or its provider cannot be opened
(``gateway.session``: the provider interface imports nothing of the gateway), a notice is dropped
(``gateway.notices``), a Redis command fails.

Label values are bounded: a function label is a name from the workers' catalog (a call reaches the dispatcher
only with a catalog spec), providers are the fixed set of ``PROVIDER``. With ``WEB_CONCURRENCY`` > 1 every
process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (``python -m gateway`` makes a fresh
directory when the variable is not set) and a scrape of any process sums them all, so one scrape sees the whole
port, whichever process the kernel hands it to.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from shared.prometheus import exposition_registry

OUTCOMES = ("ok", "error", "timeout", "cancelled")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: from a cached lookup (a few ms) to a slow external API near the usual function deadlines."""

calls = Counter("gateway_calls_total", "Backend calls answered, by function and outcome.", ["function", "outcome"])
call_duration = Histogram(
    "gateway_call_duration_seconds",
    "Time from a backend call's request to its answer, by function.",
    ["function"],
    buckets=DURATION_BUCKETS,
)
pending_calls = Gauge("gateway_pending_calls", "Backend calls in flight.", multiprocess_mode="livesum")
sessions = Gauge("gateway_sessions", "Open WebSocket sessions, by provider.", ["provider"], multiprocess_mode="livesum")
upstream_connect_failures = Counter(
    "gateway_upstream_connect_failures_total", "Provider connections that failed to open, by provider.", ["provider"]
)
live_workers = Gauge(
    "gateway_live_workers",
    "Worker processes whose catalog the gateway last read (refreshed by each scrape).",
    multiprocess_mode="livemostrecent",
)
redis_errors = Counter("gateway_redis_errors_total", "Redis commands or subscriptions that failed.")
dropped_notices = Counter("gateway_dropped_notices_total", "Call notices dropped because a client read too slowly.")


def call_finished(function: str, outcome: str, seconds: float) -> None:
    """Count one answered (or cancelled) call of ``function`` (a catalog name) and its duration."""
    calls.labels(function, outcome).inc()
    call_duration.labels(function).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets and its content type (every process's values with WEB_CONCURRENCY > 1)."""
    return generate_latest(exposition_registry()), CONTENT_TYPE_LATEST
