"""The scripted upstream: a stand-in provider speaking the Deepgram Voice Agent protocol, run as its own process.

The gateway reaches it as ``PROVIDER=deepgram DEEPGRAM_URL=ws://127.0.0.1:<port>``; the prior-art scenario
connects its client to it directly, as a browser connects to Deepgram. Per connection it sends ``Welcome``,
answers ``Settings`` with ``SettingsApplied`` and echoes every binary (audio) frame back at once.

Load is driven from here, where the provider sits, so every latency is what the provider would observe: the
client adds a ``bench`` block to its Settings (the gateway relays unknown fields untouched); once every session
is connected the driver sends ``BenchStart {start_at, measure_from, end_at}`` on each (relayed too, so all
sessions start together); this process runs the plan on the connection, then sends ``BenchResults`` back
(the gateway relays unknown message types to the client). Plans:

- ``{"mode": "calls", "function": ..., "arguments": ..., "rate": ...}``:
  ``FunctionCallRequest`` out, timestamped, matching ``FunctionCallResponse`` in, timestamped. ``rate`` None
  is a closed loop (one call in flight per session); a number is an open loop at that many calls/s.
- ``{"mode": "ping", ...}``: the same with a ``BenchPing`` text frame the peer echoes: the round trip of one
  loopback WebSocket hop, subtracted from call latencies to estimate the gateway's own overhead.

Times: ``start_at``/``measure_from``/``end_at`` are wall-clock (``time.time()``, shared with the driver);
latencies use ``time.perf_counter()`` in this process only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.rawws import ServerEndpoint
from shared.redis_server import free_port
from tests.support.processes import Process, wait_until

ANSWER_TIMEOUT = 10.0
"""Seconds after which an unanswered request counts as lost (the gateway's own deadline is 5 s)."""


class UpstreamConnection(ServerEndpoint):
    """One connection from the gateway (or from a prior-art client)."""

    def __init__(self) -> None:
        super().__init__()
        self.tag = uuid.uuid4().hex[:8]
        self._seq = 0
        self._pending: dict[str, tuple[float, asyncio.Future[str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._plan: dict[str, Any] | None = None

    def on_open(self) -> None:
        self.send_text(json.dumps({"type": "Welcome", "request_id": self.tag}))

    def on_binary(self, data: bytes) -> None:
        self.send_binary(data)  # audio echo: the relay-delay scenario times the round trip on the client

    def on_text(self, text: str) -> None:
        now = time.perf_counter()
        message = json.loads(text)
        kind = message.get("type")
        if kind in ("FunctionCallResponse", "BenchPing"):
            entry = self._pending.pop(str(message.get("id")), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result((now, str(message.get("content", ""))))  # type: ignore[arg-type]
        elif kind == "Settings":
            self.send_text('{"type":"SettingsApplied"}')
            self._plan = message.get("bench")
        elif kind == "BenchStart" and isinstance(self._plan, dict):
            plan = {**self._plan, **{k: message[k] for k in ("start_at", "measure_from", "end_at")}}
            task = asyncio.get_running_loop().create_task(self._run(plan))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- plans ---------------------------------------------------------------------------------------------

    def _request(self, plan: dict[str, Any]) -> tuple[float, asyncio.Future[Any]]:
        self._seq += 1
        call_id = f"{self.tag}-{self._seq}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if plan["mode"] == "ping":
            frame = json.dumps({"type": "BenchPing", "id": call_id, "pad": "x" * 64})
        else:
            call = {"id": call_id, "name": plan["function"], "arguments": plan.get("arguments", "{}")}
            frame = json.dumps({"type": "FunctionCallRequest", "functions": [{**call, "client_side": True}]})
        sent = time.perf_counter()
        self._pending[call_id] = (sent, future)
        self.send_text(frame)
        return sent, future

    async def _run(self, plan: dict[str, Any]) -> None:
        samples: list[float] = []
        counts = {"sent": 0, "answered": 0, "errors": 0, "lost": 0, "total": 0}

        async def one(sent: float, future: asyncio.Future[Any], measured: bool) -> None:
            try:
                received, content = await asyncio.wait_for(future, ANSWER_TIMEOUT)
            except TimeoutError:
                counts["lost"] += measured
                return
            counts["total"] += 1  # warm-up included: CPU per call is measured over the whole plan
            if measured:
                counts["answered"] += 1
                counts["errors"] += '"error"' in content
                samples.append(round((received - sent) * 1000, 4))

        await asyncio.sleep(max(0.0, plan["start_at"] - time.time()))
        rate = plan.get("rate")
        inflight: set[asyncio.Task[None]] = set()
        if rate:
            interval = 1.0 / rate
            next_at = time.perf_counter() + random.uniform(0, interval)  # random phase: sessions do not align
        while (wall := time.time()) < plan["end_at"]:
            measured = wall >= plan["measure_from"]
            if rate:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
                sent, future = self._request(plan)
                task = asyncio.get_running_loop().create_task(one(sent, future, measured))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            else:
                sent, future = self._request(plan)
                await one(sent, future, measured)
            counts["sent"] += measured
        if inflight:
            await asyncio.wait(inflight, timeout=ANSWER_TIMEOUT + 1)
        self.send_text(json.dumps({"type": "BenchResults", "samples_ms": samples, **counts}))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamConnection, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def start(log_dir: Path) -> tuple[Process, int]:
    """This module as a process of its own on a free port, once it listens (it prints ``READY``); and the port."""
    port = free_port()
    proc = Process(["-m", "benchmarks.upstream", "--port", str(port)], {}, log_dir / "upstream.log")
    wait_until(lambda: proc.check() or "READY" in proc.log(), 30, "the scripted upstream")
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description="Scripted Deepgram-protocol upstream for the benchmarks.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
