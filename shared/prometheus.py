"""Prometheus exposition shared by the gateway and the workers, one process or several.

Several processes under one supervisor (``WEB_CONCURRENCY`` gateways, ``WORKER_PROCESSES`` workers) use
prometheus_client's multiprocess mode: each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
and an exposition sums them, so one scrape sees them all. The variable must be set before a process first
imports prometheus_client: the supervisor sets it (:func:`multiprocess_directory`) and its children, started
with ``spawn``, inherit it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition_registry() -> CollectorRegistry:
    """What a scrape reads: every process's values in multiprocess mode, else this process's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)
    return registry


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """Multiprocess mode for the children started inside the block; yields the directory. A fresh one unless
    the operator set PROMETHEUS_MULTIPROC_DIR (then it is theirs to empty between runs, as prometheus_client
    requires)."""
    preset = os.environ.get(MULTIPROC_ENV)
    if preset:
        yield preset
        return
    with tempfile.TemporaryDirectory(prefix="vfg-metrics-") as directory:
        os.environ[MULTIPROC_ENV] = directory
        try:
            yield directory
        finally:
            del os.environ[MULTIPROC_ENV]


def process_died(pid: int) -> None:
    """Drop a dead child's live gauges (its sessions, calls, busy slots are gone); its counters stay summed."""
    if os.environ.get(MULTIPROC_ENV):
        _multiprocess.mark_process_dead(pid)
