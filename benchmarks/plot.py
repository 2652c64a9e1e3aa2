"""The latency plot of PERFORMANCE.md: percentile (x) against latency (y), HdrHistogram style.

The x axis is ``1 / (1 - percentile)`` on a log scale, so the median, p90, p99 and p99.9 are evenly spaced
and the tail, which is what a voice conversation hears, gets as much room as the middle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG

import matplotlib.pyplot as plt

TICKS = [0.5, 0.9, 0.99, 0.999]


def _series(ax: Any, points: list[list[float]], label: str, **style: Any) -> None:
    usable = [(q, ms) for q, ms in points if q < 1.0 and ms > 0]
    if not usable:
        return
    ax.plot([1 / (1 - q) for q, _ in usable], [ms for _, ms in usable], label=label, **style)


def _axes(ax: Any, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1 / (1 - q) for q in TICKS])
    ax.set_xticklabels([f"p{q * 100:g}" for q in TICKS])
    ax.set_xlim(1, 1 / (1 - 0.9995))
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")


def draw(results: dict[str, Any], path: Path) -> None:
    calls = results.get("calls", {})
    panels = [("Function call, 1 session", "1"), ("Function call, 100 sessions", "100")]
    streaming = results.get("sessions", {}).get("streaming", [])
    fig, axes = plt.subplots(1, len(panels) + bool(streaming), figsize=(6 * (len(panels) + bool(streaming)), 4.6))
    variants = [
        ("in_process", "in-process (execute)", {"color": "0.6", "linestyle": ":"}),
        ("ws_hop", "one loopback WS hop", {"color": "0.4", "linestyle": "--"}),
        ("bare", "bare BLPOP + PUBLISH", {"color": "tab:green"}),
        ("gateway", "gateway (this project)", {"color": "tab:blue", "linewidth": 2.2}),
        ("naive_rq", "naive RQ", {"color": "tab:red"}),
        ("prior_art_0ms", "prior art, client RTT 0 ms", {"color": "tab:orange"}),
        ("prior_art_40ms", "prior art, client RTT 40 ms", {"color": "tab:brown"}),
    ]
    for ax, (title, concurrency) in zip(axes, panels, strict=False):
        for key, label, style in variants:
            data = calls.get(key, {})
            if key == "in_process":
                entry = data.get("execute") if concurrency == "1" else None
            elif key == "ws_hop":
                entry = data if concurrency == "1" else None
            else:
                entry = data.get(concurrency)
            if entry:
                _series(ax, entry["quantiles"], label, **style)
        _axes(ax, title + " (request sent → response received, at the provider)")
    if streaming:
        ax = axes[-1]
        for index, point in enumerate(streaming):
            color = plt.get_cmap("viridis")(index / max(1, len(streaming) - 1))
            n, k = point["sessions"], point.get("gateway_processes", 1)
            via = f"{n} sessions, through the gateway" + (f" ({k} processes)" if k > 1 else "")
            _series(ax, point["through_gateway"]["quantiles"], via, color=color)
            if k == 1:  # the direct run is the same with any number of gateway processes
                _series(ax, point["direct"]["quantiles"], f"{n} sessions, direct", color=color, linestyle=":")
        _axes(ax, "Audio frame round trip (client → upstream echo → client)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
