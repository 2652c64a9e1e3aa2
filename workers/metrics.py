"""The workers' Prometheus metrics: calls run, their run time, busy slots; scraped on WORKER_METRICS_PORT.

Recorded by :mod:`workers.observe` for each call the runner runs: :func:`busy` around its run, :func:`call_ran`
when it ends. The supervisor of ``python -m workers`` serves one endpoint for all its processes:
it enters :func:`shared.prometheus.multiprocess_directory` before starting them, and calls :func:`serve` (the
children only record). Port 0 (the default) serves nothing: the values are still recorded, and cheap.

Function labels are names of the worker's own registry; any other name (a job for a function this worker does
not have) is counted as ``"other"``, so a caller cannot grow the label set.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shared.prometheus import exposition_registry

OTHER = "other"
OUTCOMES = ("ok", "error", "timeout", "cancelled")
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

calls_run = Counter("worker_calls_total", "Calls a worker ran, by function and outcome.", ["function", "outcome"])
run_seconds = Histogram(
    "worker_call_run_seconds", "Time a call's function ran, by function.", ["function"], buckets=RUN_BUCKETS
)
busy_slots = Gauge("worker_busy_slots", "Calls running now on this host's workers.", multiprocess_mode="livesum")


def function_label(name: str, known: Collection[str]) -> str:
    """``name`` when the worker registered it, else ``"other"``."""
    return name if name in known else OTHER


def call_ran(name: str, known: Collection[str], outcome: str, seconds: float) -> None:
    """Count one call of ``name`` that ended with ``outcome`` (one of :data:`OUTCOMES`) after ``seconds``."""
    label = function_label(name, known)
    calls_run.labels(label, outcome if outcome in OUTCOMES else "error").inc()
    run_seconds.labels(label).observe(seconds)


@contextmanager
def busy() -> Iterator[None]:
    """One slot busy for the block (a call running), in a thread or a coroutine."""
    busy_slots.inc()
    try:
        yield
    finally:
        busy_slots.dec()


def serve(port: int, host: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread] | None:
    """Serve ``/metrics`` (every worker process's values in multiprocess mode) on ``port`` in a daemon thread;
    None when ``port`` is 0. Stop it with ``server.shutdown()``."""
    if port == 0:
        return None
    return start_http_server(port, host, registry=exposition_registry())
