"""Driver-side sessions: what a browser or SDK would be, reduced to what the benchmarks need.

A :class:`BenchClient` opens a session (through the gateway, or straight to the scripted upstream for the
prior-art path), sends Settings carrying a plan, and collects what comes back: ``BenchResults`` from the
upstream, the gateway's ``BackendFunctionCall`` notices (their ``duration_ms`` is the gateway's own view of a
call), and echoed audio frames (relay delay). :func:`open_sessions` connects many with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable
from typing import Any

from benchmarks.rawws import BINARY, ClientEndpoint, connect, encode

FRAME_BYTES = 640
"""20 ms of 16 kHz mono linear16 audio."""
STAMP = struct.Struct("!Qd")
"""What an audio frame carries first: sequence number, send time (``time.perf_counter()`` of the driver)."""
SILENCE = bytes(FRAME_BYTES - STAMP.size)


def settings(plan: dict[str, Any] | None = None) -> str:
    message: dict[str, Any] = {
        "type": "Settings",
        "audio": {
            "input": {"encoding": "linear16", "sample_rate": 16000},
            "output": {"encoding": "linear16", "sample_rate": 24000, "container": "none"},
        },
        "agent": {"think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "benchmark"}},
    }
    if plan is not None:
        message["bench"] = plan
    return json.dumps(message)


class BenchClient(ClientEndpoint):
    """One session seen from the client side."""

    def __init__(self, settings_frame: str) -> None:
        super().__init__()
        self.settings_frame = settings_frame
        self.applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.results: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.notice_ms: list[float] = []
        self.notices: dict[str, float] = {}
        """Call id → the gateway's own ``duration_ms`` for it (from its ``finished`` notice)."""
        self.errors: list[str] = []
        self.on_request: Callable[[BenchClient, dict[str, Any]], None] | None = None
        """Prior-art path: what to do with a FunctionCallRequest (the gateway path never forwards one)."""
        self.echo_ms: list[float] = []
        self.measure_from = float("inf")
        """``perf_counter`` time from which echoed frames count (earlier ones are warm-up)."""

    def on_open(self) -> None:
        self.send_text(self.settings_frame)

    def on_text(self, text: str) -> None:
        if '"BackendFunctionCall"' in text:
            notice = json.loads(text)
            if notice.get("status") == "finished":
                self.notice_ms.append(float(notice.get("duration_ms", 0.0)))
                self.notices[str(notice.get("id"))] = self.notice_ms[-1]
            return
        message = json.loads(text)
        kind = message.get("type")
        if kind == "SettingsApplied" and not self.applied.done():
            self.applied.set_result(None)
        elif kind == "BenchResults" and not self.results.done():
            self.results.set_result(message)
        elif kind == "FunctionCallRequest" and self.on_request is not None:
            self.on_request(self, message)
        elif kind in ("Error", "Warning"):
            self.errors.append(f"{message.get('code')}: {message.get('description')}")

    def on_binary(self, data: bytes) -> None:
        _, sent = STAMP.unpack_from(data)
        if sent >= self.measure_from:
            self.echo_ms.append((time.perf_counter() - sent) * 1000)

    def send_audio(self, seq: int) -> None:
        self.send_raw(audio_frame(seq))

    def start(self, start_at: float, measure_from: float, end_at: float) -> None:
        self.send_text(
            json.dumps({"type": "BenchStart", "start_at": start_at, "measure_from": measure_from, "end_at": end_at})
        )


def audio_frame(seq: int) -> bytes:
    return encode(BINARY, STAMP.pack(seq, time.perf_counter()) + SILENCE, masked=True)


async def open_sessions(
    url: str, count: int, settings_frame: str, parallel: int = 20, timeout: float = 60.0
) -> list[BenchClient]:
    """``count`` sessions that have all received SettingsApplied. ``parallel`` bounds concurrent handshakes
    (the gateway's listen backlog is finite: a burst of thousands would see SYN retries, not the gateway)."""
    gate = asyncio.Semaphore(parallel)

    async def one() -> BenchClient:
        async with gate:
            client = await connect(url, lambda: BenchClient(settings_frame))
            await asyncio.wait_for(asyncio.shield(client.applied), timeout)
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def close_sessions(clients: list[BenchClient], timeout: float = 10.0) -> None:
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([asyncio.ensure_future(c.closed) for c in clients], timeout=timeout)


async def run_plan(
    clients: list[BenchClient], warmup: float, duration: float, lead: float = 0.3
) -> tuple[list[float], dict[str, int], float]:
    """Start every client's plan at once; gather latency samples (ms), counts and the measured window (s)."""
    start_at = time.time() + lead
    for client in clients:
        client.start(start_at, start_at + warmup, start_at + warmup + duration)
    replies = await asyncio.wait_for(
        asyncio.gather(*(asyncio.shield(c.results) for c in clients)), lead + warmup + duration + 30
    )
    samples: list[float] = []
    counts = {"sent": 0, "answered": 0, "errors": 0, "lost": 0, "total": 0}
    for reply in replies:
        samples += reply["samples_ms"]
        for key in counts:
            counts[key] += int(reply.get(key, 0))
    for client in clients:  # a plan runs once per connection: ready the futures for the next one
        client.results = asyncio.get_running_loop().create_future()
    return samples, counts, duration
