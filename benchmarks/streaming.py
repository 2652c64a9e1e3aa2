"""Sessions: relay delay of real-time audio through the gateway, gateway CPU, memory per session.

N clients each send a 20 ms PCM frame (640 bytes) every 20 ms, through the gateway to the scripted upstream,
which echoes every binary frame; each frame carries its send time, so the client measures the round trip
client → gateway → upstream → gateway → client. The same clients connected straight to the upstream give the
round trip without the gateway (the load generator's and the loopback's share); the relay delay reported is
the difference of the two at the same percentile. Sessions are spread evenly over the 20 ms period, as
independent microphones would be.

Memory: the gateway's resident set size before the sessions connect and once they all run, divided by N.
Idle sessions (Settings sent, no audio) are measured the same way at a larger N.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import profiles
from benchmarks.clients import BenchClient, close_sessions, open_sessions, settings
from benchmarks.procfs import CpuMeter, machine_busy_seconds, rss_bytes
from benchmarks.stats import quantile_points, summarize

FRAME_PERIOD = 0.020
SLOTS = 20
"""The 20 ms period is cut into this many 1 ms slots; each session sends in its own slot."""


async def stream(clients: list[BenchClient], warmup: float, duration: float) -> dict[str, Any]:
    """Send frames on every session for ``warmup + duration`` s; returns the round-trip summary (ms)."""
    measure_from = time.perf_counter() + warmup
    for client in clients:
        client.echo_ms = []
        client.measure_from = measure_from
    groups = [clients[i::SLOTS] for i in range(SLOTS)]
    start = time.perf_counter()
    end = measure_from + duration
    seq = sent = late = 0
    tick = 0
    while (now := time.perf_counter()) < end:
        due = start + tick * FRAME_PERIOD / SLOTS
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > FRAME_PERIOD:
            late += 1  # the load generator fell a whole period behind: say so rather than hide it
        for client in groups[tick % SLOTS]:
            seq += 1
            client.send_audio(seq)
        sent += len(groups[tick % SLOTS])
        tick += 1
    await asyncio.sleep(0.5)  # let the last echoes arrive
    samples = [ms for c in clients for ms in c.echo_ms]
    expected = len(clients) * duration / FRAME_PERIOD
    return {
        "summary": summarize(samples),
        "quantiles": quantile_points(samples),
        "frames_sent": sent,
        "frames_per_s": round(sent / (warmup + duration), 1),
        "echoes_measured": len(samples),
        "echo_ratio": round(len(samples) / expected, 3) if expected else 0.0,
        "late_ticks": late,
    }


async def streaming_point(
    gateway_url: str,
    upstream_url: str,
    gateway_pid: int | list[int],
    sessions: int,
    warmup: float,
    duration: float,
    profile_to: Path | None = None,
    upstream_pid: int | None = None,
) -> dict[str, Any]:
    """Relay delay, gateway CPU and memory per session with ``sessions`` streaming at once; with ``profile_to``,
    the gateway is sampled with py-spy while the frames flow (not while sessions connect).

    CPU is also taken for the scripted upstream, this load generator and the whole machine: all of them share
    the cores, so a relay delay that grows while the gateway has CPU to spare is the machine running out."""
    gc.collect()
    pids = gateway_pid if isinstance(gateway_pid, list) else [gateway_pid]
    rss_before = sum(rss_bytes(pid) for pid in pids)
    via = await open_sessions(gateway_url, sessions, settings())
    profile: dict[str, Any] | None = None
    try:
        rss_connected = sum(rss_bytes(pid) for pid in pids)
        sampling = profiles.start(pids[0], profile_to, max(1, int(warmup + duration))) if profile_to else None
        groups = {"gateway": pids, "load_generator": [os.getpid()]}
        meter = CpuMeter(groups | ({"upstream": [upstream_pid]} if upstream_pid else {}))
        meter.start()
        busy_before = machine_busy_seconds()
        wall_before = time.perf_counter()
        through = await stream(via, warmup, duration)
        wall = time.perf_counter() - wall_before
        used = meter.stop()
        cpu = used["gateway"] / wall
        cpu_percent = {name: round(seconds / wall * 100, 1) for name, seconds in used.items()}
        cpu_percent["machine"] = round((machine_busy_seconds() - busy_before) / wall * 100, 1)
        rss_streaming = sum(rss_bytes(pid) for pid in pids)
        if profile_to:
            profile = await asyncio.to_thread(profiles.finish, sampling, profile_to)
    finally:
        await close_sessions(via)
    direct_clients = await open_sessions(upstream_url, sessions, settings())
    try:
        direct = await stream(direct_clients, warmup, duration)
    finally:
        await close_sessions(direct_clients)
    relay = {
        key: round(through["summary"][key] - direct["summary"][key], 3)
        for key in ("p50", "p90", "p99")
        if key in through["summary"] and key in direct["summary"]
    }
    return {
        "sessions": sessions,
        "gateway_processes": len(pids),
        "through_gateway": through,
        "direct": direct,
        "relay_ms": relay,
        "gateway_cpu_percent": round(cpu * 100, 1),
        "cpu_percent": cpu_percent,  # of one core; "machine" sums all cores (200 = two cores busy)
        "rss_per_session_kb": round((rss_streaming - rss_before) / sessions / 1024, 1),
        "rss_connected_per_session_kb": round((rss_connected - rss_before) / sessions / 1024, 1),
        **({"profile": profile} if profile else {}),
    }


async def idle_point(gateway_url: str, gateway_pid: int, sessions: int, settle: float = 2.0) -> dict[str, Any]:
    """Memory per idle session: ``sessions`` connected (Settings applied, upstream open), nothing flowing."""
    rss_before = rss_bytes(gateway_pid)
    started = time.perf_counter()
    clients = await open_sessions(gateway_url, sessions, settings())
    connect_s = time.perf_counter() - started
    try:
        await asyncio.sleep(settle)
        rss_after = rss_bytes(gateway_pid)
    finally:
        await close_sessions(clients, timeout=30)
    return {
        "sessions": sessions,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_per_session_kb": round((rss_after - rss_before) / sessions / 1024, 1),
        "connect_seconds": round(connect_s, 1),
    }
