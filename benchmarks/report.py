"""Write docs/PERFORMANCE.md (and the plot) from a results JSON.

``python -m benchmarks.report [--json docs/performance-results.json]`` redraws both without rerunning the
suite. Every number in the document comes from the one run in the JSON (tables from :mod:`benchmarks.tables`,
the targets' verdicts and the figures the prose quotes from here); every sentence comes from the Markdown
template, ``benchmarks/PERFORMANCE.template.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tables import (
    DASH,
    TEXT,
    TIMES,
    breakdown_table,
    calls_table,
    capacity_table,
    cpu_table,
    fmt,
    hop_ms,
    machine_section,
    overhead,
    profile_section,
    roundtrip_section,
    scaling_table,
    sessions_table,
    sustained_table,
    table,
)

ROOT = Path(__file__).resolve().parents[1]


def targets(results: dict[str, Any]) -> list[list[Any]]:
    calls = results.get("calls", {})
    hop = hop_ms(results)
    gw1 = calls.get("gateway", {}).get("1", {}).get("summary", {})
    naive1 = calls.get("naive_rq", {}).get("1", {}).get("summary", {})
    rows: list[list[Any]] = []

    def row(name: str, value: float | None, limit: float, unit: str, smaller: bool = True, note: str = "") -> None:
        if value is None:
            rows.append([name, "not measured in this run", DASH])
            return
        met = value <= limit if smaller else value >= limit
        spaced = "" if unit == TIMES else " "
        rows.append([name, f"{value:.2f}{spaced}{unit}{note}", "**met**" if met else "**not met**"])

    ov = overhead(gw1, hop) if gw1 else {}
    row("overhead p50 ≤ 1.0 ms, 1 session", ov.get("p50"), 1.0, "ms")
    row("overhead p99 ≤ 4 ms, 1 session", ov.get("p99"), 4.0, "ms")
    paired = calls.get("paired", {}).get("rounds")
    if paired:
        ratios = sorted(max(0.0, r["gateway_p50"] - hop) / r["naive_rq_p50"] for r in paired)
        ratio: float | None = float(np.median(ratios))
        raw = f" (median of {len(ratios)} alternating rounds; range {ratios[0]:.2f} to {ratios[-1]:.2f}{TIMES})"
    else:
        ratio = ov["p50"] / naive1["p50"] if ov and naive1.get("p50") else None
        raw = f" (whole path incl. WS hops: {gw1['p50'] / naive1['p50']:.2f}" + TIMES + ")" if ratio else ""
    row(f"overhead ≤ 0.35{TIMES} naive RQ (p50, 1 session)", ratio, 0.35, TIMES, note=raw)
    sustained = {s["offered_per_s"]: s for s in results.get("sustained", [])}
    at800 = sustained.get(800)
    if at800:
        duration = results["plan"]["duration"]
        good = (at800["counts"]["answered"] - at800["counts"]["errors"]) / duration
        p99 = at800["summary"].get("p99", float("inf"))
        met = good >= 0.98 * 800 and p99 <= 25
        knee = max((r for r, e in sustained.items() if e["summary"].get("p99", 1e9) <= 25), default=None)
        best = f"; highest rate with p99 ≤ 25 ms: {knee}/s" if knee else "; no rate tried kept p99 ≤ 25 ms"
        rows.append(
            ["≥ 800 calls/s sustained, 2 workers, p99 ≤ 25 ms", f"at 800/s offered: p99 {p99:.0f} ms{best}",
             "**met**" if met else "**not met**"]
        )  # fmt: skip
    else:
        rows.append(["≥ 800 calls/s sustained, 2 workers, p99 ≤ 25 ms", "not measured in this run", DASH])
    at200 = [s for s in results.get("sessions", {}).get("streaming", []) if s["sessions"] == 200 and s["relay_ms"]]
    best = min(at200, key=lambda s: s["relay_ms"].get("p99", 1e9), default=None)
    setups = "; ".join(
        f"{s.get('gateway_processes', 1)} gateway process(es): {s['relay_ms'].get('p99', 0):.1f} ms" for s in at200
    )
    row(
        "200 streaming sessions, relay p99 ≤ 10 ms",
        best["relay_ms"].get("p99") if best else None,
        10,
        "ms",
        note=f" ({setups})" if len(at200) > 1 else "",
    )
    idle = results.get("sessions", {}).get("idle")
    row(
        f"idle session ≤ 100 KB (N = {idle['sessions'] if idle else DASH})",
        idle and idle["rss_per_session_kb"],
        100,
        "KB",
    )
    rows += capacity_targets(results.get("capacity"))
    return rows


def capacity_targets(cap: dict[str, Any] | None) -> list[list[Any]]:
    """The capacity section's targets (one worker process): bursts answered in time, a rate sustained. The
    rows name the load the run offered (a smoke run offers less than the targets' 40, 16 and 300)."""
    cap = cap or {}
    rows = []
    for key, kind, target in (("async_burst", "`async`", 40), ("blocking_burst", "blocking", 16)):
        entry = cap.get(key)
        name = f"{entry['calls'] if entry else target} concurrent 300 ms {kind} calls, 1 worker process: all ≤ 1.5 s"
        if not entry:
            rows.append([name, "not measured in this run", DASH])
        elif entry["last_answer_ms"] is None:
            good = entry["counts"]["answered"] - entry["counts"]["errors"]
            rows.append([name, f"{good} of {entry['calls']} answered with their result", "**not met**"])
        else:
            last = entry["last_answer_ms"]
            rows.append([name, f"last answer after {last / 1000:.2f} s", "**met**" if last <= 1500 else "**not met**"])
    rate = cap.get("sustained")
    name = (
        f"{rate['offered_per_s'] if rate else 300} calls/s of a 300 ms `async` function, 1 worker process, p99 ≤ 400 ms"
    )
    if not rate:
        return [*rows, [name, "not measured in this run", DASH]]
    c, p99 = rate["counts"], rate["summary"].get("p99", float("inf"))
    good = (c["answered"] - c["errors"]) / rate["seconds"]
    met = good >= 0.98 * rate["offered_per_s"] and p99 <= 400
    slots = f" (`WORKER_CONCURRENCY={rate['slots']}`)" if rate.get("slots") else ""
    seen = f"p99 {p99:.0f} ms; {good:.0f} answered with a result /s{slots}"
    return [*rows, [name, seen, "**met**" if met else "**not met**"]]


def derived(results: dict[str, Any]) -> dict[str, str]:
    """Figures the prose quotes: CPU per call at the highest closed-loop load, its ceiling, relay CPU per frame."""
    entries = results.get("calls", {}).get("gateway", {})
    top = max(entries, key=int) if entries else None
    cpu = entries.get(top, {}).get("cpu_ms_per_call", {}) if top else {}
    total = sum(cpu.values())
    # CPU per relayed frame (each frame crosses the gateway twice: to the upstream and back), from the lightest
    # load: heavier ones may leave frames queued, which would make each one look cheaper than it is.
    streams = sorted(results.get("sessions", {}).get("streaming", []), key=lambda p: p["sessions"])
    frame_us = [
        p["gateway_cpu_percent"] * 10_000 / (2 * p["through_gateway"]["frames_per_s"])
        for p in streams[:1]
        if p["through_gateway"]["frames_per_s"]
    ]
    sustained = results.get("sustained", [])
    knee = max((e["offered_per_s"] for e in sustained if e["summary"].get("p99", 1e9) <= 25), default=None)
    return {
        "knee": f"{knee} calls/s" if knee else "none of the rates tried",
        "sessions_per_core": f"{1e6 / (frame_us[0] * 100):.0f}" if frame_us else DASH,
        "cpu_load": f"{top}-session" if top else DASH,
        "cpu_total": fmt(total, 1) if total else DASH,
        "ceiling": f"{2000 / total:.0f}" if total else DASH,
        "frame_us": f"{frame_us[0]:.0f}" if frame_us else DASH,
    }


def floor(results: dict[str, Any]) -> dict[str, str]:
    """Figures of the floor analysis: the bare floor and our overhead at one session, the breakdown's stages,
    the CPU per call of each process at one session, and what 300 calls/s would take of one worker's core."""
    calls = results.get("calls", {})
    bare = calls.get("bare", {}).get("1", {}).get("summary", {}).get("p50")
    gw1 = calls.get("gateway", {}).get("1", {})
    over = overhead(gw1["summary"], hop_ms(results)).get("p50") if gw1.get("summary") else None
    stages = calls.get("breakdown", {}).get("stages_ms", {})
    cpu = gw1.get("cpu_ms_per_call", {})
    worker = cpu.get("workers")
    return {
        "floor_p50": fmt(bare),
        "overhead_p50": fmt(over),
        "floor_ratio": f"{over / bare:.1f}{TIMES}" if bare and over else DASH,
        **{stage: fmt(stages.get(stage)) for stage in ("ws_hops", "queue_to_worker", "result_to_response")},
        "gw_cpu": fmt(cpu.get("gateway")),
        "worker_cpu": fmt(worker),
        "redis_cpu": fmt(cpu.get("redis")),
        "capacity_core": f"{300 * worker / 10:.0f}" if worker else DASH,
    }


def render(results: dict[str, Any], plot_name: str) -> str:
    rq_info = results.get("rq_info", "").strip()
    return TEXT.render(
        **derived(results),
        **floor(results),
        machine=machine_section(results),
        targets=table(["target", "this run", "verdict"], targets(results)),
        plot=plot_name,
        calls=calls_table(results),
        hop=fmt(hop_ms(results), 3),
        breakdown=breakdown_table(results),
        roundtrips=roundtrip_section(results),
        cpu=cpu_table(results),
        sustained=sustained_table(results),
        profiles=profile_section(results),
        sessions=sessions_table(results),
        scaling=scaling_table(results),
        capacity=capacity_table(results),
        rq_info=rq_info or "(not captured)",
    )


def write_report(results: dict[str, Any], doc: Path, plot: Path) -> None:
    from benchmarks.plot import draw  # matplotlib (the bench extra) is needed for the plot only

    draw(results, plot)
    doc.parent.mkdir(parents=True, exist_ok=True)
    rel = plot.relative_to(doc.parent) if plot.is_relative_to(doc.parent) else plot
    doc.write_text(render(results, str(rel)))


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "performance-results.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "PERFORMANCE.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "performance-latency.png")
    args = parser.parse_args()
    write_report(json.loads(args.json.read_text()), args.doc, args.plot)
    print(f"wrote {args.doc} and {args.plot}")


if __name__ == "__main__":
    main()
