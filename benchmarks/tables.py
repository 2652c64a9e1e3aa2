"""The tables of docs/PERFORMANCE.md, and the sentences around them, from one run's results.

Each function turns one part of the results JSON into Markdown; the sentences that appear only when a run
has the data come from the template's fragments (:mod:`benchmarks.template`), so all the prose is in
``benchmarks/PERFORMANCE.template.md`` and only numbers and table labels are made here.
"""

from __future__ import annotations

from typing import Any

from benchmarks.breakdown import STAGES
from benchmarks.template import MarkdownTemplate

TEXT = MarkdownTemplate.load()
NOT_MEASURED = TEXT.fragment("not_measured")
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
        rounds = table(
            ["round", "gateway p50 ms", "overhead p50 ms", "naive RQ p50 ms", "overhead ÷ naive RQ"],
            [
                [i + 1, r["gateway_p50"], max(0.0, r["gateway_p50"] - hop), r["naive_rq_p50"],
                 f"{max(0.0, r['gateway_p50'] - hop) / r['naive_rq_p50']:.2f}{TIMES}"]
                for i, r in enumerate(paired)
            ],
        )  # fmt: skip
        text += "\n\n" + TEXT.fragment("paired", seconds=fmt(calls["paired"]["seconds"], 1), table=rounds)
    return text


def breakdown_table(results: dict[str, Any]) -> str:
    b = results.get("calls", {}).get("breakdown")
    if not b or "stages_ms" not in b:
        return NOT_MEASURED
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
        return NOT_MEASURED
    c = rt["counts"]
    listing = table(
        ["#", "where", "commands (one round trip)"],
        [[i + 1, "gateway enqueue", " ".join(t)] for i, t in enumerate(rt["enqueue"])]
        + [[i + 1, "worker, before the result", " ".join(t)] for i, t in enumerate(rt["worker_critical"])]
        + [[i + 1, "worker, after the result", " ".join(t)] for i, t in enumerate(rt["worker_after"])],
    )
    counts = ("per_call", "commands_per_call", "enqueue", "worker_critical", "worker_after")
    text = TEXT.fragment("roundtrips", table=listing, **{name: c[name] for name in counts})
    wc = rt.get("worker_class")
    if wc:
        classes = table(
            ["worker class", "calls", "p50 ms", "p90 ms", "p99 ms", "round medians ms"],
            [
                [label, wc[kind]["n"], wc[kind]["p50"], wc[kind]["p90"], wc[kind]["p99"],
                 ", ".join(map(str, wc["round_medians"][kind]))]
                for kind, label in (("simple", "rq `SimpleWorker`"), ("call", "`CallWorker`"))
            ],
        )  # fmt: skip
        rounds = len(wc["round_medians"]["call"])
        ratio = f"{wc['ratio_p50']:.2f}{TIMES}"
        text += "\n\n" + TEXT.fragment("worker_class", rounds=rounds, table=classes, ratio=ratio)
    return text


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
        return NOT_MEASURED
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
        return TEXT.fragment("no_profile")
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
    ) if rows else NOT_MEASURED  # fmt: skip
    for p in sessions.get("streaming", []):
        if "profile" in p:
            profile = profile_table("gateway", p["profile"], f"{p['sessions']} sessions streaming")
            text += "\n\n" + TEXT.fragment("streaming_profile", profile=profile)
    idle = sessions.get("idle")
    if idle:
        text += "\n\n" + TEXT.fragment(
            "idle",
            sessions=idle["sessions"],
            before=idle["rss_before_mb"],
            after=idle["rss_after_mb"],
            per_session=idle["rss_per_session_kb"],
            seconds=idle["connect_seconds"],
        )
    return text


def scaling_table(results: dict[str, Any]) -> str:
    scaling = results.get("scaling", {})
    if not scaling:
        return NOT_MEASURED
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


def capacity_table(results: dict[str, Any]) -> str:
    cap = results.get("capacity")
    if not cap:
        return NOT_MEASURED
    rows = []
    for key, label in (("async_burst", "`async` function"), ("blocking_burst", "blocking function")):
        entry = cap.get(key)
        if entry:
            c, s = entry["counts"], entry["summary"]
            rows.append([f"burst, {label}", entry["calls"], c["answered"] - c["errors"], c["errors"], c["lost"],
                         s.get("p50"), s.get("p99"), s.get("max")])  # fmt: skip
    sustained = cap.get("sustained")
    if sustained:
        c, s = sustained["counts"], sustained["summary"]
        slots = f", `WORKER_CONCURRENCY={sustained['slots']}`" if sustained.get("slots") else ""
        rows.append([f"{sustained['offered_per_s']} calls/s for {sustained['seconds']:g} s, `async` function{slots}",
                     c["sent"], c["answered"] - c["errors"], c["errors"], c["lost"], s.get("p50"), s.get("p99"),
                     s.get("max")])  # fmt: skip
    header = [
        "load (1 worker process)",
        "calls",
        "answered with a result",
        "errors",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
    ]
    text = table(header, rows)
    memory = cap.get("memory")
    if memory:
        text += "\n\n" + TEXT.fragment(
            "capacity_memory", idle=fmt(memory["idle_kb"] / 1024, 1), peak=fmt(memory["peak_kb"] / 1024, 1),
            calls=memory["in_flight"], per_call=fmt(memory["kb_per_call"], 1),
        )  # fmt: skip
    return text
