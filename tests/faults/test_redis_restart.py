"""Redis killed mid-traffic and started again on the same port about a second later, empty; then once more, for
three seconds, while every worker waits idle.

The test Redis has no persistence, so everything in it is lost: queued jobs, stored results, worker catalogs.
What must hold: the gateway stays up and keeps every session open, calls pending at the crash are answered
(result or error) by their deadline, and calls made after Redis returns succeed within 2 s, on sessions opened
before the crash and on new ones (those need the catalog, which workers republish on their next heartbeat: every
CATALOG_TTL / 3 s, 1 s here). Every probe call is held to it, not only the first success: each call on a session
open throughout gets a result, and a new session may lack the backend functions only before the catalog is back
(see ``probe_failures``); /readyz answers 200 again after each return.

The second outage found that an idle worker came back only 4 s after Redis did (RQ's reconnect wait doubles,
1 s, 2 s, 4 s...), and the first that a session starting just after the restart got no backend functions (the
first command on each dead pooled connection failed); both are fixed (workers/worker.py, gateway/redis_pool.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.catalog import Catalog
from gateway.dispatcher import Dispatcher
from shared.config import Config
from shared.redis_server import RedisServer, free_port
from tests.faults.helpers import DEADLINE_MARGIN, call, stop_all
from tests.support.client import AgentClient
from tests.support.processes import Gateway, http_status, live_workers, start_workers, wait_until
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

OUTAGE = 1.0
"""Seconds between killing redis-server and starting the new one, mid-traffic (the issue's scenario)."""
LONG_OUTAGE = 3.0
"""The second outage, with every worker idle: long enough to show how fast an idle worker reconnects."""
WORKERS = 3
POOLED = 8
"""Connections in the gateway's Redis pool when Redis dies, for the test of its client alone."""
RECOVERY_BOUND = 2.0
"""The issue's promise: new calls succeed within this many seconds of Redis returning."""
PROBE_OFFSETS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
"""When, after Redis returns, each probe session asks for a call."""
NEW_SESSION_OFFSETS = PROBE_OFFSETS
"""When, after Redis returns, a new session starts and asks for a call (it needs the republished catalog)."""
ECHO_SECONDS = [0.5, 0.5, 2.0, 2.0]
"""The calls running when Redis dies: the short ones finish during the outage (their result cannot be stored),
the long ones after it. Three workers for four calls: one waits in the queue that the crash wipes out."""
ECHO_DEADLINE = 5.0
TIME_DEADLINE = 3.0
"""get_current_time's timeout."""


class Poller(threading.Thread):
    """GET /healthz and /readyz every 100 ms until stopped, keeping (time, healthz, readyz) for each round."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            now = time.monotonic()
            self.samples.append((now, http_status(self.base + "/healthz"), http_status(self.base + "/readyz")))

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:
            self.join(5)

    def ready_since(self, origin: float) -> float:
        """Seconds from ``origin`` to the first 200 of /readyz at or after it (inf if none)."""
        return next((t - origin for t, _, ready in self.samples if t >= origin and ready == 200), float("inf"))


OK = "ok"
NO_FUNCTIONS = "no backend functions"
"""The call went to the client: the session started before the workers republished their catalog."""
ERROR = "error answer"


async def outcome_of(client: AgentClient, origin: float, timeout: float) -> tuple[str, float]:
    """Wait for the agent's answer; return (:data:`OK`, :data:`ERROR` or :data:`NO_FUNCTIONS`; seconds from
    ``origin``). No answer within ``timeout`` raises ``TimeoutError``: it fails the test.

    A ``FunctionCallRequest`` reaching the client also ends the wait: it means the session started without
    backend functions (the catalog was not back yet) and the call went to the client.
    """
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.next(timeout)
            message = json.loads(frame) if isinstance(frame, str) else {}
            if message.get("type") == "FunctionCallRequest":
                return NO_FUNCTIONS, time.monotonic() - origin
            if message.get("type") == "ConversationText" and message.get("role") == "assistant":
                return (ERROR if '"error"' in message["content"] else OK), time.monotonic() - origin


async def answer_of(client: AgentClient, origin: float, timeout: float) -> tuple[bool, float]:
    """Wait for the agent's answer as :func:`outcome_of` does; return (a backend result, not an error; seconds)."""
    outcome, at = await outcome_of(client, origin, timeout)
    return outcome == OK, at


async def timed_answer(client: AgentClient, text: str, origin: float, timeout: float) -> tuple[bool, float]:
    """Ask for a call, then wait for its answer as :func:`answer_of` does."""
    await client.say(text)
    return await answer_of(client, origin, timeout)


@dataclass
class Probe:
    sent_at: float
    """Seconds after Redis returned."""
    outcome: str
    """:data:`OK`, :data:`ERROR` or :data:`NO_FUNCTIONS`."""
    answered_at: float
    new_session: bool
    """Opened at ``sent_at`` (it needs the republished catalog), or open since before the crash."""

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    def figure(self) -> dict[str, object]:
        return {
            "session": "new" if self.new_session else "open throughout",
            "sent_at_s": self.sent_at,
            "outcome": self.outcome,
            "answered_at_s": round(self.answered_at, 2),
        }


async def probe(client: AgentClient | None, url: str, offset: float, back: float) -> Probe:
    """At ``back + offset``, ask for a call on ``client`` (a session open since before the crash) or on a session
    opened there and then (``client`` None, closed afterwards), and time the answer from ``back``."""
    await asyncio.sleep(max(0.0, back + offset - time.monotonic()))
    fresh = client is None
    if client is None:
        client = await AgentClient.connect(url)
        await client.start()
    await client.say(call("get_current_time", timezone="UTC"))
    outcome, at = await outcome_of(client, back, TIME_DEADLINE + 5)
    if fresh:
        await client.close()
    return Probe(offset, outcome, at, fresh)


def probe_failures(old: list[Probe], new: list[Probe]) -> list[dict[str, object]]:
    """The probes that broke the promise, with generous bounds. Every call on a session open throughout gets a
    result: it knows the backend functions, and the call's own deadline (3 s) covers the workers' reconnect. A
    new session may miss the backend functions only while the catalog is not back (a call that reaches the
    client, never an error or a timeout), only before the recovery bound, and never again once one new session
    got a result: recovery does not flap."""
    bad = [p for p in old if not p.ok]
    recovered = False
    for p in sorted(new, key=lambda p: p.sent_at):
        tolerated = p.outcome == NO_FUNCTIONS and p.sent_at < RECOVERY_BOUND + DEADLINE_MARGIN / 2 and not recovered
        if not p.ok and not tolerated:
            bad.append(p)
        recovered = recovered or p.ok
    return [p.figure() for p in bad]


def first_success(probes: list[Probe]) -> float:
    return min((p.answered_at for p in probes if p.ok), default=float("inf"))


class RestartableRedis:
    """A redis-server on a fixed port that can crash and come back, empty, on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = RedisServer(port=self.port).start()
        self.url = self.server.url

    async def crash_and_return(self, outage: float) -> tuple[float, float]:
        """SIGKILL it, wait ``outage`` seconds, start a new one; return (killed, back) monotonic times."""
        killed = time.monotonic()
        self.server.kill()
        await asyncio.sleep(outage)
        self.server = await asyncio.to_thread(RedisServer(port=self.port).start)  # returns once PING answers
        return killed, time.monotonic()

    def stop(self) -> None:
        self.server.stop()


async def probe_round(old_sessions: list[AgentClient], url: str, back: float) -> tuple[list[Probe], list[Probe]]:
    """Probe calls after Redis returned at ``back``: on sessions opened before the crash, and on new ones."""
    old = asyncio.gather(*(probe(c, url, o, back) for c, o in zip(old_sessions, PROBE_OFFSETS, strict=True)))
    new = asyncio.gather(*(probe(None, url, o, back) for o in NEW_SESSION_OFFSETS))
    return await asyncio.gather(old, new)


async def test_redis_restart_mid_traffic(logs_dir: Path, reliability: Entry):
    """Redis killed and restarted empty on the same port, mid-traffic and again with idle workers"""
    redis_server = RestartableRedis()
    workers = start_workers(redis_server.url, logs_dir / "restart-workers.log", processes=WORKERS, CATALOG_TTL="3")
    gateway = Gateway(redis_server.url, logs_dir / "restart-gateway.log").wait_ready()
    poller = Poller(gateway.http)
    try:
        in_flight = [await AgentClient.connect(gateway.url) for _ in ECHO_SECONDS]
        old_sessions = [await AgentClient.connect(gateway.url) for _ in PROBE_OFFSETS]
        for client in in_flight + old_sessions:
            await client.start()  # Settings before the crash: these sessions know the backend functions
        poller.start()

        # 1. Mid-traffic: calls running on every worker, one more queued.
        started = time.monotonic()
        for client, seconds in zip(in_flight, ECHO_SECONDS, strict=True):
            await client.say(call("slow_echo", text=f"pending-{seconds}", seconds=seconds))
            await client.expect("BackendFunctionCall", status="started")
        pending = [asyncio.create_task(answer_of(c, started, ECHO_DEADLINE + 10)) for c in in_flight]
        await asyncio.sleep(0.3)  # the workers are inside the function now
        killed, back = await redis_server.crash_and_return(OUTAGE)
        old_results, new_results = await probe_round(old_sessions, gateway.url, back)
        pending_results = await asyncio.gather(*pending)

        # 2. Idle workers, longer outage: each worker waits for Redis in RQ's own reconnect loop.
        await asyncio.to_thread(wait_until, lambda: len(live_workers(redis_server.url)) == WORKERS, 15, "workers")
        idle_killed, idle_back = await redis_server.crash_and_return(LONG_OUTAGE)
        idle_old, idle_new = await probe_round(old_sessions, gateway.url, idle_back)
        poller.stop()
        ready_after = [poller.ready_since(back), poller.ready_since(idle_back)]

        still_open = [c.ws.close_code is None for c in in_flight + old_sessions]
        follow_ups = [await timed_answer(c, call("get_current_time", timezone="UTC"), back, 10) for c in in_flight]
        health_failures = sum(1 for _, healthy, _ in poller.samples if healthy != 200)
        recoveries = {
            "mid-traffic, old sessions": first_success(old_results),
            "mid-traffic, new sessions": first_success(new_results),
            "idle workers, old sessions": first_success(idle_old),
            "idle workers, new sessions": first_success(idle_new),
        }
        all_probes = old_results + new_results + idle_old + idle_new
        broken = probe_failures(old_results, new_results) + probe_failures(idle_old, idle_new)
        missed = [p for p in all_probes if p.outcome == NO_FUNCTIONS]
        reliability.tried = (
            f"redis-server SIGKILLed and restarted empty on the same port twice: {OUTAGE:g} s down with "
            f"{len(in_flight)} calls running, then {LONG_OUTAGE:g} s down with {WORKERS} idle workers; "
            f"{len(all_probes)} probe calls 0-{PROBE_OFFSETS[-1]:g} s after each return, on "
            f"{len(old_sessions)} sessions open throughout and on new sessions"
        )
        reliability.happened = (
            f"gateway up throughout ({len(poller.samples) - health_failures}/{len(poller.samples)} health checks "
            f"ok), {sum(still_open)}/{len(still_open)} sessions still open; the {len(in_flight)} pending calls "
            f"answered ({sum(ok for ok, _ in pending_results)} ok, {sum(not ok for ok, _ in pending_results)} "
            f"error), slowest {max(at for _, at in pending_results):.2f} s after they started (deadline "
            f"{ECHO_DEADLINE:g} s); first successful new call after Redis returned: "
            + ", ".join(f"{seconds:.2f} s ({case})" for case, seconds in recoveries.items())
            + f" (bound {RECOVERY_BOUND:g} s); {sum(p.ok for p in all_probes)}/{len(all_probes)} probe calls got a "
            f"result"
            + (
                f", {len(missed)} new sessions started before the catalog was back (at most "
                f"{max(p.sent_at for p in missed):g} s after Redis returned) had no backend functions"
                if missed
                else ""
            )
            + f", {len(broken)} broke the promise; /readyz 200 again "
            + " and ".join(f"{seconds:.2f} s" for seconds in ready_after)
            + " after each return"
        )
        reliability.figures.update(
            outages_seconds=[round(back - killed, 2), round(idle_back - idle_killed, 2)],
            health_checks=len(poller.samples),
            health_failures=health_failures,
            sessions_open_after=f"{sum(still_open)}/{len(still_open)}",
            pending_calls=[
                {"sleep_s": s, "ok": ok, "answered_after_s": round(at, 2)}
                for s, (ok, at) in zip(ECHO_SECONDS, pending_results, strict=True)
            ],
            first_success_seconds=recoveries,
            readyz_200_after_each_return_seconds=ready_after,
            probes_ok=f"{sum(p.ok for p in all_probes)}/{len(all_probes)}",
            failed_probes=[p.figure() for p in all_probes if not p.ok],
            probes_breaking_the_promise=broken,
        )

        assert gateway.popen.poll() is None, "the gateway died"
        assert health_failures == 0
        assert all(still_open)
        assert all(at <= ECHO_DEADLINE + DEADLINE_MARGIN for _, at in pending_results)
        assert all(seconds <= RECOVERY_BOUND + DEADLINE_MARGIN / 2 for seconds in recoveries.values()), recoveries
        assert not broken, broken
        assert all(seconds <= RECOVERY_BOUND + DEADLINE_MARGIN for seconds in ready_after), ready_after
        assert all(ok for ok, _ in follow_ups), "a session open through the outage cannot call any more"
        for client in in_flight + old_sessions:
            await client.close()
    finally:
        poller.stop()
        try:
            await stop_all(gateway, workers)
        finally:
            redis_server.stop()


async def test_gateway_redis_pool_after_a_restart(reliability: Entry):
    """The gateway's Redis client, many pooled connections, across a Redis restart"""
    # Through the gateway process a burst of sessions does not reliably use several pooled connections at once
    # (each catalog read takes 0.1 ms), so the gateway's own client (gateway/redis_pool.py) is tested here alone.
    redis_server = RestartableRedis()
    dispatcher = Dispatcher(Config(redis_url=redis_server.url))
    catalog = Catalog(dispatcher.redis, max_age=0)
    try:
        await asyncio.gather(*(dispatcher.redis.ping() for _ in range(POOLED)))  # that many connections, at once
        await redis_server.crash_and_return(OUTAGE)
        reads = await asyncio.gather(*(catalog.workers() for _ in range(POOLED)), return_exceptions=True)
        failed = [type(r).__name__ for r in reads if isinstance(r, BaseException)]

        reliability.tried = (
            f"redis-server SIGKILLed and restarted {OUTAGE:g} s later while the gateway's client held {POOLED} "
            f"pooled connections; then {POOLED} concurrent catalog reads (what {POOLED} sessions starting together do)"
        )
        reliability.happened = f"{POOLED - len(failed)}/{POOLED} reads succeeded" + (
            f"; failed: {', '.join(failed)}" if failed else ""
        )
        reliability.figures.update(pooled_connections=POOLED, reads_failed=len(failed))
        assert not failed, f"{len(failed)} of {POOLED} reads failed on dead pooled connections: {failed}"
    finally:
        await dispatcher.stop()
        redis_server.stop()
