"""Function-call scenarios measured at the scripted upstream: through the gateway, the prior art, one WS hop.

Every latency here is the provider's view: ``FunctionCallRequest`` sent → ``FunctionCallResponse`` received.

- :func:`gateway_point`: the system under test. The upstream talks to the gateway, which runs the call on
  the workers; the client only watches (it receives the gateway's ``BackendFunctionCall`` notices).
- :func:`prior_art_point`: dg_react_agent's browser-forward path. The client is connected straight to the
  provider (as a browser is to Deepgram), receives the request, POSTs ``/function-call`` (served by the same
  gateway, same workers), and sends the response. ``rtt_ms`` is the client's network round trip, injected as
  sleeps: half on each of the four legs (provider → client, client → backend, back, client → provider).
- :func:`ws_hop_point`: one loopback WebSocket round trip, upstream ↔ a ``websockets`` client (the library
  and settings the gateway uses for its upstream connection), echoing a frame of a similar size. The gateway's
  own overhead is estimated as the call latency minus the median of this.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.asyncio.client import connect as ws_connect

from benchmarks.clients import BenchClient, close_sessions, open_sessions, run_plan, settings
from benchmarks.procfs import CpuMeter
from benchmarks.stats import quantile_points, summarize

NOOP = {"mode": "calls", "function": "bench_noop", "arguments": "{}"}


def point(samples: list[float], counts: dict[str, int], seconds: float, **extra: Any) -> dict[str, Any]:
    return {"summary": summarize(samples, seconds), "quantiles": quantile_points(samples), "counts": counts, **extra}


def cpu_per_call(meter: CpuMeter | None, calls: int) -> dict[str, float]:
    """CPU milliseconds per answered call, per process group (what caps throughput on two cores)."""
    if meter is None or not calls:
        return {}
    return {name: round(seconds * 1000 / calls, 3) for name, seconds in meter.stop().items()}


async def gateway_point(
    url: str,
    sessions: int,
    warmup: float,
    duration: float,
    plan: dict[str, Any] | None = None,
    rate: float | None = None,
    meter: CpuMeter | None = None,
) -> dict[str, Any]:
    """``sessions`` concurrent sessions through the gateway; closed loop, or ``rate`` calls/s in total.

    ``notices`` (call id → the gateway's own duration) is for :mod:`benchmarks.breakdown`, not for the JSON."""
    plan = {**(plan or NOOP), "rate": rate / sessions if rate else None}
    clients = await open_sessions(url, sessions, settings(plan))
    try:
        if meter:
            meter.start()
        samples, counts, seconds = await run_plan(clients, warmup, duration)
        notices = [ms for c in clients for ms in c.notice_ms]
        return point(
            samples,
            counts,
            seconds,
            notices={call_id: ms for c in clients for call_id, ms in c.notices.items()},
            gateway_ms=summarize(notices),
            cpu_ms_per_call=cpu_per_call(meter, counts["total"]),
            client_errors=sorted({e for c in clients for e in c.errors})[:5],
        )
    finally:
        await close_sessions(clients)


async def _post(host: str, port: int, body: bytes) -> dict[str, Any]:
    """``POST /function-call`` as a browser's fetch would send it (the gateway closes each connection)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /function-call HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, len(body), body)
    )
    raw = await reader.read()
    writer.close()
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def _forwarder(http_port: int, rtt_ms: float) -> Any:
    rtt = rtt_ms / 1000
    tasks: set[asyncio.Task[None]] = set()

    async def forward(client: BenchClient, call: dict[str, Any]) -> None:
        if rtt:
            await asyncio.sleep(rtt)  # provider → client, then client → backend
        body = json.dumps({"id": call["id"], "name": call["name"], "arguments": call.get("arguments", "{}")})
        reply = await _post("127.0.0.1", http_port, body.encode())
        if rtt:
            await asyncio.sleep(rtt)  # backend → client, then client → provider
        content = reply["content"] if "content" in reply else json.dumps({"error": reply.get("error")})
        client.send_text(
            json.dumps({"type": "FunctionCallResponse", "id": call["id"], "name": call["name"], "content": content})
        )

    def on_request(client: BenchClient, message: dict[str, Any]) -> None:
        for call in message.get("functions", []):
            task = asyncio.get_running_loop().create_task(forward(client, call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return on_request


async def prior_art_point(
    upstream_url: str, http_port: int, sessions: int, rtt_ms: float, warmup: float, duration: float
) -> dict[str, Any]:
    clients = await open_sessions(upstream_url, sessions, settings({**NOOP, "rate": None}))
    handler = _forwarder(http_port, rtt_ms)
    for client in clients:
        client.on_request = handler
    try:
        samples, counts, seconds = await run_plan(clients, warmup, duration)
        return point(samples, counts, seconds, rtt_ms=rtt_ms)
    finally:
        await close_sessions(clients)


async def ws_hop_point(upstream_url: str, warmup: float, duration: float) -> dict[str, Any]:
    async with ws_connect(upstream_url, compression=None, max_size=None) as ws:
        await ws.send(settings({"mode": "ping"}))
        results: dict[str, Any] = {}
        started = False
        async for frame in ws:
            if isinstance(frame, str) and '"BenchPing"' in frame:
                await ws.send(frame)
            elif '"SettingsApplied"' in frame and not started:
                started = True
                start_at = time.time() + 0.1
                bench = {
                    "start_at": start_at,
                    "measure_from": start_at + warmup,
                    "end_at": start_at + warmup + duration,
                }
                await ws.send(json.dumps({"type": "BenchStart", **bench}))
            elif '"BenchResults"' in frame:
                results = json.loads(frame)
                break
    samples = results.get("samples_ms", [])
    counts = {k: int(results.get(k, 0)) for k in ("sent", "answered", "errors", "lost", "total")}
    return point(samples, counts, duration)
