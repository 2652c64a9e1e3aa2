"""Latency summaries: percentiles for the tables, quantile points for the plot.

Percentiles use numpy's default (linear interpolation between closest ranks). The plot is drawn from stored
quantiles rather than raw samples, so the JSON stays small and ``python -m benchmarks.report`` can redraw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = np.concatenate([np.linspace(0, 0.9, 91), 1 - np.logspace(-1, -4, 61)[1:], [1.0]])
"""Where the distribution is sampled for the plot: every percent up to p90, then densely into the tail."""


def summarize(samples_ms: Sequence[float], seconds: float | None = None) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean (ms); ``calls_per_s`` when the measuring window is given."""
    if not samples_ms:
        return {"n": 0}
    arr = np.asarray(samples_ms, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    out: dict[str, Any] = {
        "n": int(arr.size),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "max": round(float(arr.max()), 4),
        "mean": round(float(arr.mean()), 4),
    }
    if seconds:
        out["calls_per_s"] = round(arr.size / seconds, 1)
    return out


def quantile_points(samples_ms: Sequence[float]) -> list[list[float]]:
    """``[[q, ms], ...]`` for the plot: the distribution at :data:`QUANTILES`."""
    if not samples_ms:
        return []
    values = np.quantile(np.asarray(samples_ms, dtype=float), QUANTILES)
    return [[round(float(q), 5), round(float(v), 4)] for q, v in zip(QUANTILES, values, strict=True)]


def minus(summary: dict[str, Any], baseline_ms: float) -> dict[str, Any]:
    """A summary with a constant (the median of a baseline round trip) taken off every percentile."""
    out = dict(summary)
    for key in ("p50", "p90", "p99", "max", "mean"):
        if key in out:
            out[key] = round(max(0.0, out[key] - baseline_ms), 3)
    return out
