"""The benchmark sections, run in order against one loopback Redis; each returns plain JSON-able data.

Every process is started here and stopped before the next section needs the CPU: the machine has two cores
and everything (Redis, workers, gateway, scripted upstream, load generator) shares them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks import baselines, calls, capacity, profiles, streaming, upstream, workerclass
from benchmarks.breakdown import breakdown
from benchmarks.procfs import CpuMeter, children, spawned_children
from shared import keys
from tests.support.processes import Gateway, Process, live_workers, start_workers, wait_until

WORKER_MODULES = "workers.examples,benchmarks.functions"
GATEWAY_ENV = {
    "PROVIDER": "deepgram",
    "DEEPGRAM_API_KEY": "benchmark",
    "MAX_SESSIONS": "5000",
    # The prior-art scenario POSTs /function-call from one address, closed loop, at hundreds of calls a second:
    # the per-address request rate must not shape the baseline (sessions send far fewer).
    "CLIENT_MESSAGE_RATE": "100000",
}
"""The gateway as deployed (INFO logs, call notices on), reaching the scripted upstream as it would Deepgram."""


@dataclass(frozen=True)
class Plan:
    """How long and how wide each section runs; ``quick()`` and ``smoke()`` shrink it."""

    warmup: float = 1.0
    duration: float = 8.0
    concurrency: tuple[int, ...] = (1, 10, 100)
    prior_art_concurrency: tuple[int, ...] = (1, 10)
    rates: tuple[int, ...] = (100, 200, 300, 400, 600, 800)
    scaling_workers: tuple[int, ...] = (1, 2, 4)
    scaling_sessions: int = 16
    streaming_sessions: tuple[int, ...] = (50, 200, 500)
    streaming_sessions_concurrent: tuple[int, ...] = (200,)
    """Also measured with two gateway processes on the port (WEB_CONCURRENCY=2)."""
    idle_sessions: int = 2000
    workerclass_rounds: int = 3
    workerclass_calls: int = 200
    paired_rounds: int = 5
    paired_seconds: float = 3.0
    profile: bool = True
    capacity_async: int = 40
    """Concurrent 300 ms ``async`` calls sent at once to one worker process."""
    capacity_blocking: int = 16
    """Concurrent 300 ms blocking calls sent at once to one worker process."""
    capacity_rate: int = 300
    """Calls/s of the 300 ms ``async`` function offered to one worker process."""
    sections: tuple[str, ...] = ("roundtrips", "calls", "sustained", "scaling", "capacity", "sessions")

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup=0.3, duration=1.5, concurrency=(1, 10), prior_art_concurrency=(1,), rates=(200, 800),
            scaling_workers=(1, 2), scaling_sessions=8, streaming_sessions=(20,), streaming_sessions_concurrent=(20,),
            idle_sessions=100,
            workerclass_rounds=1, workerclass_calls=60, paired_rounds=2, paired_seconds=1.0,
        )  # fmt: skip

    @classmethod
    def smoke(cls) -> Plan:
        return cls(
            warmup=0.2, duration=0.6, concurrency=(1,), prior_art_concurrency=(1,), rates=(), scaling_workers=(),
            streaming_sessions=(), streaming_sessions_concurrent=(), idle_sessions=0, workerclass_rounds=0,
            profile=False, paired_rounds=0, capacity_async=4, capacity_blocking=2, capacity_rate=3,
            sections=("roundtrips", "calls", "capacity"),
        )  # fmt: skip


class Suite:
    def __init__(self, plan: Plan, redis_url: str, redis_pid: int, out: Path) -> None:
        self.plan = plan
        self.redis_url = redis_url
        self.redis_pid = redis_pid
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.upstream, port = upstream.start(self.logs)
        self.upstream_url = f"ws://127.0.0.1:{port}/v1/agent/converse"

    def close(self) -> None:
        self.upstream.stop()

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def gateway(self, **env: str) -> Gateway:
        settings = {**GATEWAY_ENV, "DEEPGRAM_URL": self.upstream_url, **env}
        return Gateway(self.redis_url, self.logs / "gateway.log", **settings).wait_ready()

    def workers(self, count: int, **env: str) -> Process:
        log = self.logs / f"workers-{count}{''.join(f'-{v}' for v in env.values())}.log"
        return start_workers(self.redis_url, log, count, timeout=60, WORKER_MODULES=WORKER_MODULES, **env)

    def meter(self, gateway: Gateway, workers: Process) -> CpuMeter:
        return CpuMeter(
            {
                "gateway": [gateway.pid],
                "workers": children(workers.pid),
                "redis": [self.redis_pid],
                "upstream": [self.upstream.pid],
            }
        )

    # --- sections ------------------------------------------------------------------------------------------

    def roundtrips(self) -> dict[str, Any]:
        self.log("Redis round trips per call")
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.roundtrips", "--redis", self.redis_url],
            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        out: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-1000:]}
        if self.plan.workerclass_rounds:
            self.log("worker class: RQ SimpleWorker against CallWorker")
            out["worker_class"] = workerclass.compare(
                self.redis_url, self.logs, self.plan.workerclass_rounds, self.plan.workerclass_calls
            )
        return out

    async def calls(self) -> dict[str, Any]:
        p = self.plan
        out: dict[str, Any] = {"in_process": baselines.in_process(20_000 if p.duration > 1 else 2000)}
        self.log("one loopback WebSocket hop")
        out["ws_hop"] = await calls.ws_hop_point(self.upstream_url, p.warmup, p.duration)
        out["bare"] = await self._baseline("bare BLPOP + PUBLISH", baselines.start_bare_workers, self._bare)
        out["naive_rq"] = await self._baseline("naive RQ", baselines.start_naive_workers, self._naive)
        workers = self.workers(2)
        gateway = self.gateway()
        try:
            out["gateway"] = {}
            for c in p.concurrency:
                self.log(f"gateway path, {c} session(s)")
                profiled = p.profile and c == max(p.concurrency)
                sampling = self._profile_start(gateway, f"c{c}") if profiled else None
                result = await calls.gateway_point(
                    gateway.url, c, p.warmup, p.duration, meter=self.meter(gateway, workers)
                )
                notices = result.pop("notices")
                if sampling:
                    result["profiles"] = self._profile_finish(sampling)
                if c == 1:
                    out["breakdown"] = breakdown(self.redis_url, notices, result["summary"]["p50"])
                out["gateway"][str(c)] = result
            if p.paired_rounds:
                out["paired"] = await self._paired(gateway)
            for rtt in (0, 40):
                for c in p.prior_art_concurrency:
                    self.log(f"prior art (browser forward), client RTT {rtt} ms, {c} session(s)")
                    out.setdefault(f"prior_art_{rtt}ms", {})[str(c)] = await calls.prior_art_point(
                        self.upstream_url, gateway.port, c, rtt, p.warmup, p.duration
                    )
            out["rq_info"] = self.rq_info()  # while our workers are up
        finally:
            gateway.stop()
            workers.stop()
        return out

    async def _paired(self, gateway: Gateway) -> dict[str, Any]:
        """The gateway and naive RQ at one session in alternating short rounds, both sets of workers up: the
        ratio the target is about, measured under the same conditions (the rows above are minutes apart, and
        this VM's speed drifts by a third over minutes)."""
        p = self.plan
        procs = baselines.start_naive_workers(self.redis_url, self.logs, 2)
        rounds: list[dict[str, float]] = []
        try:
            for i in range(p.paired_rounds):
                self.log(f"gateway and naive RQ, alternating, round {i + 1} of {p.paired_rounds}")
                ours = await calls.gateway_point(gateway.url, 1, p.warmup, p.paired_seconds)
                naive = await asyncio.to_thread(baselines.naive_rq_point, self.redis_url, 1, p.warmup, p.paired_seconds)
                rounds.append({"gateway_p50": ours["summary"]["p50"], "naive_rq_p50": naive["summary"]["p50"]})
        finally:
            for proc in procs:
                proc.stop()
        return {"rounds": rounds, "seconds": p.paired_seconds}

    async def _baseline(self, label: str, start: Any, measure: Any) -> dict[str, Any]:
        procs = start(self.redis_url, self.logs, 2)
        try:
            results = {}
            for c in self.plan.concurrency:
                self.log(f"{label}, concurrency {c}")
                results[str(c)] = await measure(c)
            return results
        finally:
            for proc in procs:
                proc.stop()

    async def _bare(self, c: int) -> dict[str, Any]:
        return await baselines.bare_point(self.redis_url, c, self.plan.warmup, self.plan.duration)

    async def _naive(self, c: int) -> dict[str, Any]:
        p = self.plan
        return await asyncio.to_thread(baselines.naive_rq_point, self.redis_url, c, p.warmup, p.duration)

    async def sustained(self) -> list[dict[str, Any]]:
        """Open loop: calls arrive at a fixed total rate over 100 sessions, whatever the answers do."""
        p = self.plan
        workers = self.workers(2)
        gateway = self.gateway()
        results: list[dict[str, Any]] = []
        try:
            overloaded = False
            for rate in p.rates:
                if overloaded and rate != 800:
                    continue  # past capacity: only the target rate is still worth showing
                self.log(f"sustained {rate} calls/s over 100 sessions")
                result = await calls.gateway_point(
                    gateway.url, 100, p.warmup, p.duration, rate=rate, meter=self.meter(gateway, workers)
                )
                result.pop("notices")
                result["offered_per_s"] = rate
                results.append(result)
                summary, counts = result["summary"], result["counts"]
                # Clearly past capacity (a queue builds up): higher rates would only measure the backlog.
                overloaded = counts["errors"] > 0 or summary.get("p50", 1e9) > 100
                self.drain()
        finally:
            gateway.stop()
            workers.stop()
        return results

    def drain(self, timeout: float = 20) -> None:
        """Wait until the queue is empty again, so a backlog does not leak into the next measurement."""
        client = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and client.llen(f"rq:queue:{keys.queue_name('default')}"):
            time.sleep(0.2)
        client.close()
        time.sleep(0.5)

    async def scaling(self) -> dict[str, Any]:
        p = self.plan
        functions = {
            "cpu": {"mode": "calls", "function": "bench_cpu", "arguments": "{}"},
            "io": {"mode": "calls", "function": "bench_io", "arguments": '{"seconds": 0.02}'},
        }
        out: dict[str, Any] = {kind: {} for kind in functions}
        for count in p.scaling_workers:
            workers = self.workers(count)
            gateway = self.gateway()
            try:
                for kind, plan in functions.items():
                    self.log(f"scaling: {count} worker(s), {kind}-bound function")
                    meter = self.meter(gateway, workers)
                    result = await calls.gateway_point(
                        gateway.url, p.scaling_sessions, p.warmup, p.duration, plan=plan, meter=meter
                    )
                    result.pop("notices")
                    result.pop("quantiles")
                    out[kind][str(count)] = result
            finally:
                gateway.stop()
                workers.stop()
                self.drain()
        return out

    async def capacity(self) -> dict[str, Any]:
        return await capacity.run(self)

    async def sessions(self) -> dict[str, Any]:
        p = self.plan
        workers = self.workers(1)  # Settings needs a catalog; no calls run here
        out: dict[str, Any] = {"streaming": []}
        try:
            profiled = min(p.streaming_sessions, key=lambda n: abs(n - 200)) if p.profile else None
            for n in p.streaming_sessions:
                self.log(f"{n} sessions streaming 20 ms frames")
                gateway = self.gateway()  # a fresh process each time: its memory is the sessions' alone
                path = self.out / f"profile-gateway-streaming-{n}.txt" if n == profiled else None
                try:
                    point = await streaming.streaming_point(
                        gateway.url, self.upstream_url, gateway.pid, n, p.warmup, p.duration,
                        upstream_pid=self.upstream.pid,
                    )  # fmt: skip
                    if path:  # a pass of its own: the sampler's CPU would otherwise weigh on the numbers above
                        self.log(f"{n} sessions streaming, profiled")
                        profiled_point = await streaming.streaming_point(
                            gateway.url, self.upstream_url, gateway.pid, n, p.warmup, p.duration, profile_to=path
                        )
                        point["profile"] = profiled_point.get("profile")
                    out["streaming"].append(point)
                finally:
                    gateway.stop()
            for n in p.streaming_sessions_concurrent:
                self.log(f"{n} sessions streaming 20 ms frames, WEB_CONCURRENCY=2")
                gateway = self.gateway(WEB_CONCURRENCY="2")
                try:
                    wait_until(lambda pid=gateway.pid: len(spawned_children(pid)) == 2, 30, "two gateway processes")
                    out["streaming"].append(
                        await streaming.streaming_point(
                            gateway.url, self.upstream_url, spawned_children(gateway.pid), n, p.warmup, p.duration,
                            upstream_pid=self.upstream.pid,
                        )
                    )  # fmt: skip
                finally:
                    gateway.stop()
            if p.idle_sessions:
                self.log(f"{p.idle_sessions} idle sessions")
                gateway = self.gateway()
                try:
                    out["idle"] = await streaming.idle_point(gateway.url, gateway.pid, p.idle_sessions)
                finally:
                    gateway.stop()
        finally:
            workers.stop()
        return out

    # --- profiles ------------------------------------------------------------------------------------------

    def _profile_start(self, gateway: Gateway, tag: str) -> list[tuple[str, Any, Path]]:
        seconds = self.plan.warmup + self.plan.duration
        targets = {"gateway": gateway.pid, "worker": live_workers(self.redis_url)[0]["pid"]}
        started = []
        for name, pid in targets.items():
            path = self.out / f"profile-{name}-{tag}.txt"
            started.append((name, profiles.start(pid, path, max(1, int(seconds))), path))
        return started

    def _profile_finish(self, started: list[tuple[str, Any, Path]]) -> dict[str, Any]:
        return {name: profiles.finish(proc, path) for name, proc, path in started}

    def rq_info(self) -> str:
        """``rq info``'s view of our queues: RQ's own tooling still sees everything."""
        rq = Path(sys.executable).parent / "rq"
        done = subprocess.run([str(rq), "info", "--url", self.redis_url], capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip()
