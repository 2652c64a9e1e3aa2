"""Write docs/PERFORMANCE.md (and the plot) from a results JSON.

``python -m benchmarks.report [--json docs/performance-results.json]`` redraws both without rerunning the
suite. Every number in the document comes from the one run in the JSON; the prose that explains them lives
in :mod:`benchmarks.narrative`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import narrative
from benchmarks.breakdown import STAGES
from benchmarks.plot import draw

ROOT = Path(__file__).resolve().parents[1]
DASH = "\u2013"
FRAMEWORK = (
    "<", "runpy", "threading.", "asyncio.base_events", "asyncio.runners", "asyncio.events", "gateway.__main__",
    "multiprocessing.", "workers.worker.run_", "rq.worker.base.BaseWorker.work", "concurrent.futures.thread._W",
    "concurrent.futures.thread._worker",
)  # fmt: skip
"""Frames every stack starts with (the event loop, the worker loop): left out of the profile tables."""
TIMES = "\u00d7"
STAGE_TEXT = dict(STAGES)
"""What each stage covers, as the code now says it (a results file keeps the words of its own day)."""

CALL_VARIANTS = [
    ("bare", "floor: bare BLPOP worker + PUBLISH"),
    ("gateway", "**gateway** (provider's view)"),
    ("gateway_overhead", "**gateway overhead** (minus one WS hop)"),
    ("naive_rq", "naive RQ (enqueue, SimpleWorker, wait for result)"),
    ("prior_art_0ms", "prior art, client RTT 0 ms"),
    ("prior_art_40ms", "prior art, client RTT 40 ms"),
]


def fmt(value: Any, digits: int = 2) -> str:
    """Floats: no decimals from 100 up, ``digits`` decimals down to 0.1, three significant digits below."""
    if value is None:
        return DASH
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def hop_ms(results: dict[str, Any]) -> float:
    return float(results.get("calls", {}).get("ws_hop", {}).get("summary", {}).get("p50", 0.0))


def overhead(summary: dict[str, Any], hop: float) -> dict[str, Any]:
    return {k: (max(0.0, summary[k] - hop) if k in ("p50", "p90", "p99", "max") else summary.get(k)) for k in summary}


# --- targets --------------------------------------------------------------------------------------------------


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
    row("overhead p50 ≤ 1.5 ms, 1 session", ov.get("p50"), 1.5, "ms")
    row("overhead p99 ≤ 4 ms, 1 session", ov.get("p99"), 4.0, "ms")
    paired = calls.get("paired", {}).get("rounds")
    if paired:
        ratios = sorted(max(0.0, r["gateway_p50"] - hop) / r["naive_rq_p50"] for r in paired)
        ratio: float | None = float(np.median(ratios))
        raw = f" (median of {len(ratios)} alternating rounds; range {ratios[0]:.2f} to {ratios[-1]:.2f}{TIMES})"
    else:
        ratio = ov["p50"] / naive1["p50"] if ov and naive1.get("p50") else None
        raw = f" (whole path incl. WS hops: {gw1['p50'] / naive1['p50']:.2f}" + TIMES + ")" if ratio else ""
    row(f"overhead ≤ 0.5{TIMES} naive RQ (p50, 1 session)", ratio, 0.5, TIMES, note=raw)
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
    return rows


# --- sections -------------------------------------------------------------------------------------------------


def calls_table(results: dict[str, Any]) -> str:
    calls = results.get("calls", {})
    hop = hop_ms(results)
    naive = calls.get("naive_rq", {})
    rows: list[list[Any]] = []
    inproc = calls.get("in_process", {})
    for key, label in (("direct", "floor: no-op called in-process"), ("execute", "floor: in-process `execute()`")):
        s = inproc.get(key, {}).get("summary")
        if s:
            rows.append([label, 1, s["p50"], s["p90"], s["p99"], s["max"], DASH, DASH])
    if calls.get("ws_hop"):
        s = calls["ws_hop"]["summary"]
        rows.append(
            ["one loopback WebSocket hop (echo)", 1, s["p50"], s["p90"], s["p99"], s["max"], s.get("calls_per_s"), DASH]
        )
    for key, label in CALL_VARIANTS:
        source = calls.get("gateway" if key == "gateway_overhead" else key, {})
        for c, entry in sorted(source.items(), key=lambda kv: int(kv[0])):
            s = overhead(entry["summary"], hop) if key == "gateway_overhead" else entry["summary"]
            if not s.get("n"):
                continue
            base = naive.get(c, {}).get("summary", {}).get("p50")
            ratio = f"{s['p50'] / base:.2f}{TIMES}" if base else DASH
            rows.append([label, c, s["p50"], s["p90"], s["p99"], s["max"], s.get("calls_per_s"), ratio])
    text = table(["path", "sessions", "p50 ms", "p90 ms", "p99 ms", "max ms", "calls/s", "p50 ÷ naive RQ"], rows)
    paired = calls.get("paired", {}).get("rounds")
    if paired:
        text += (
            f"\n\nThe same two at one session in alternating rounds of {fmt(calls['paired']['seconds'], 1)} s (both "
            "sets of workers up), so that drift of the machine's speed between rows cannot make the ratio: the "
            "ratio target is read from the median of these rounds.\n\n"
        )
        text += table(
            ["round", "gateway p50 ms", "overhead p50 ms", "naive RQ p50 ms", "overhead ÷ naive RQ"],
            [
                [i + 1, r["gateway_p50"], max(0.0, r["gateway_p50"] - hop), r["naive_rq_p50"],
                 f"{max(0.0, r['gateway_p50'] - hop) / r['naive_rq_p50']:.2f}{TIMES}"]
                for i, r in enumerate(paired)
            ],
        )  # fmt: skip
    return text


def breakdown_table(results: dict[str, Any]) -> str:
    b = results.get("calls", {}).get("breakdown")
    if not b or "stages_ms" not in b:
        return "_not measured in this run_"
    total = sum(b["stages_ms"].values()) or 1.0
    rows = [
        [name, ms, f"{100 * ms / total:.0f} %", STAGE_TEXT.get(name, b["descriptions"].get(name, ""))]
        for name, ms in b["stages_ms"].items()
    ]
    rows.append(["**total** (provider's p50)", b["upstream_p50_ms"], "", f"medians over {b['calls']} calls"])
    return table(["stage", "median ms", "share", "what happens"], rows)


def roundtrip_section(results: dict[str, Any]) -> str:
    rt = results.get("roundtrips", {})
    if "counts" not in rt:
        return "_not measured in this run_"
    c = rt["counts"]
    lines = [
        f"One call costs **{c['per_call']} Redis round trips** ({c['commands_per_call']} commands): "
        f"{c['enqueue']} to enqueue, {c['worker_critical']} in the worker up to the `PUBLISH` of the result "
        f"(the caller waits for these), {c['worker_after']} of RQ bookkeeping after it.",
        "",
        table(
            ["#", "where", "commands (one round trip)"],
            [[i + 1, "gateway enqueue", " ".join(t)] for i, t in enumerate(rt["enqueue"])]
            + [[i + 1, "worker, before the result", " ".join(t)] for i, t in enumerate(rt["worker_critical"])]
            + [[i + 1, "worker, after the result", " ".join(t)] for i, t in enumerate(rt["worker_after"])],
        ),
    ]
    wc = rt.get("worker_class")
    if wc:
        lines += [
            "",
            "Same run, enqueue → result published with one idle worker (the gateway left out), RQ's stock "
            f"`SimpleWorker` against `CallWorker`, {len(wc['round_medians']['call'])} alternating rounds:",
            "",
            table(
                ["worker class", "calls", "p50 ms", "p90 ms", "p99 ms", "round medians ms"],
                [
                    [
                        "rq `SimpleWorker`",
                        wc["simple"]["n"],
                        wc["simple"]["p50"],
                        wc["simple"]["p90"],
                        wc["simple"]["p99"],
                        ", ".join(map(str, wc["round_medians"]["simple"])),
                    ],
                    [
                        "`CallWorker`",
                        wc["call"]["n"],
                        wc["call"]["p50"],
                        wc["call"]["p90"],
                        wc["call"]["p99"],
                        ", ".join(map(str, wc["round_medians"]["call"])),
                    ],
                ],
            ),
            "",
            f"`CallWorker` ÷ `SimpleWorker` at p50: **{wc['ratio_p50']:.2f}{TIMES}**.",
        ]
    return "\n".join(lines)


def cpu_table(results: dict[str, Any]) -> str:
    rows = []
    for label, entries in (("closed loop", results.get("calls", {}).get("gateway", {})),):
        for c, entry in sorted(entries.items(), key=lambda kv: int(kv[0])):
            cpu = entry.get("cpu_ms_per_call", {})
            rows.append([f"{label}, {c} session(s)", cpu.get("gateway"), cpu.get("workers"), cpu.get("redis"),
                         cpu.get("upstream"), round(sum(cpu.values()), 2) if cpu else None])  # fmt: skip
    for entry in results.get("sustained", []):
        cpu = entry.get("cpu_ms_per_call", {})
        rows.append([f"open loop, {entry['offered_per_s']} calls/s offered", cpu.get("gateway"), cpu.get("workers"),
                     cpu.get("redis"), cpu.get("upstream"), round(sum(cpu.values()), 2) if cpu else None])  # fmt: skip
    return table(["load", "gateway", "workers (all)", "redis-server", "scripted upstream", "total"], rows)


def sustained_table(results: dict[str, Any]) -> str:
    duration = results.get("plan", {}).get("duration", 1)
    rows = []
    for entry in results.get("sustained", []):
        s, c = entry["summary"], entry["counts"]
        rows.append([entry["offered_per_s"], round((c["answered"] - c["errors"]) / duration), s.get("p50"),
                     s.get("p99"), s.get("max"), c["errors"], c["lost"]])  # fmt: skip
    if not rows:
        return "_not measured in this run_"
    header = ["offered calls/s", "answered /s (however late)", "p50 ms", "p99 ms", "max ms", "errors", "lost"]
    return table(header, rows)


def profile_table(name: str, prof: dict[str, Any], where: str, rows_shown: int = 14) -> str:
    if "error" in prof:
        return f"**{name}**: {prof['error']}"
    wanted = [r for r in prof["top_inclusive"] if not r[0].startswith(FRAMEWORK)]
    rows = [[f"`{n}`", f"{100 * share:.0f} %"] for n, share in wanted[:rows_shown]]
    title = f"**{name}** ({prof['samples']} samples holding the GIL, {where})"
    return title + "\n\n" + table(["function (and what it calls)", "share"], rows)


def profile_section(results: dict[str, Any]) -> str:
    entries = results.get("calls", {}).get("gateway", {})
    top = max(entries, key=int) if entries else None
    profiles = entries.get(top, {}).get("profiles") if top else None
    if not profiles:
        return "_no profile in this run_"
    return "\n\n".join(profile_table(name, prof, f"{top} sessions") for name, prof in profiles.items())


def sessions_table(results: dict[str, Any]) -> str:
    sessions = results.get("sessions", {})
    rows = []
    for p in sessions.get("streaming", []):
        via, direct = p["through_gateway"], p["direct"]
        cpu = p.get("cpu_percent", {})
        rows.append([p["sessions"], p.get("gateway_processes", 1), via["frames_per_s"], via["summary"].get("p50"),
                     via["summary"].get("p99"), direct["summary"].get("p50"), direct["summary"].get("p99"),
                     p["relay_ms"].get("p50"), p["relay_ms"].get("p99"), p["gateway_cpu_percent"], cpu.get("upstream"),
                     cpu.get("load_generator"), cpu.get("machine"), p["rss_per_session_kb"],
                     via["late_ticks"] + direct["late_ticks"]])  # fmt: skip
    text = table(
        ["sessions", "gateway processes", "frames/s sent", "via gateway p50", "via p99", "direct p50", "direct p99",
         "relay p50", "relay p99", "gateway CPU %", "upstream CPU %", "load generator CPU %", "machine CPU % (of 200)",
         "RSS/session KB", "late ticks"],
        rows,
    ) if rows else "_not measured in this run_"  # fmt: skip
    for p in sessions.get("streaming", []):
        if "profile" in p:
            text += "\n\nWhere the gateway's CPU goes while relaying (py-spy, GIL-holding samples):\n\n"
            text += profile_table("gateway", p["profile"], f"{p['sessions']} sessions streaming")
    idle = sessions.get("idle")
    if idle:
        text += (
            f"\n\nIdle: **{idle['sessions']} sessions** (Settings applied, upstream connection open, nothing "
            f"flowing) took the gateway from {idle['rss_before_mb']} MB to {idle['rss_after_mb']} MB: "
            f"**{idle['rss_per_session_kb']} KB per session** (connected in {idle['connect_seconds']} s)."
        )
    return text


def scaling_table(results: dict[str, Any]) -> str:
    scaling = results.get("scaling", {})
    if not scaling:
        return "_not measured in this run_"
    counts = sorted({int(n) for kind in scaling.values() for n in kind})
    rows = []
    for kind, label in (
        ("cpu", "CPU-bound (`bench_cpu`, ~5 ms of hashing)"),
        ("io", "I/O-bound (`bench_io`, 20 ms wait)"),
    ):
        data = scaling.get(kind, {})
        rows.append(
            [label]
            + [
                f"{data[str(n)]['summary'].get('calls_per_s', 0):.0f} ({data[str(n)]['summary'].get('p50', 0):.0f} ms)"
                if str(n) in data
                else DASH
                for n in counts
            ]
        )
    return table(["function"] + [f"{n} worker(s): calls/s (p50)" for n in counts], rows)


def machine_section(results: dict[str, Any]) -> str:
    m, plan = results.get("machine", {}), results.get("plan", {})
    return table(
        ["", ""],
        [
            ["date", m.get("date")],
            ["CPU", f"{m.get('cpu')}, {m.get('cores')} cores"],
            [
                "load average (1, 5, 15 min) before / after",
                f"{m.get('load_average_before')} / {m.get('load_average_after')}",
            ],
            ["Python / redis-server", f"{m.get('python')} / {m.get('redis_server')}"],
            ["commit", m.get("commit")],
            ["mode / suite duration", f"{results.get('mode')} / {m.get('suite_seconds')} s"],
            [
                "per point",
                f"{plan.get('warmup')} s warm-up, {plan.get('duration')} s measured",
            ],
        ],
    )


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


def render(results: dict[str, Any], plot_name: str) -> str:
    rq_info = results.get("rq_info", "").strip()
    return narrative.DOCUMENT.format(
        **derived(results),
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
        rq_info=rq_info or "(not captured)",
        changes=table(["change", "file", "what", "why", "measured"], [list(c) for c in narrative.CHANGES]),
    )


def write_report(results: dict[str, Any], doc: Path, plot: Path) -> None:
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
