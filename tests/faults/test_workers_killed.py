"""Workers SIGKILLed at random while hundreds of calls flow through the gateway.

The promise under test (``gateway/dispatcher.py``, ``_watch_workers``): every backend call is answered by its
deadline and exactly once; an idempotent call whose worker dies may run again elsewhere, a call that is not
idempotent never starts twice. The provider's own bookkeeping (the simulated agent's stats) says what reached
it; Redis counters written by ``slow_write`` say how often each non-idempotent call really started.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob

from shared import keys
from shared.redis_server import RedisServer
from tests.faults.helpers import DEADLINE_MARGIN, backend_keys, call, notices, stop_all
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_workers
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

SESSIONS = 10
ROUNDS = 6
CALLS_PER_ROUND = 9
"""10 x 6 x 9 = 540 calls; 9 stays under the gateway's 16 pending calls per session."""
WORKERS = 5
MIN_ALIVE = 3
"""Workers left alive by every kill: the test is about calls whose worker dies, not about a
backlog (the supervisor's restart backoff grows for a worker that keeps dying, and with most workers down calls
would mostly wait in the queue until their deadline)."""
DEADLINE = 5.0
"""Both slow_echo and slow_write declare timeout=5."""
KILL_EVERY = (0.3, 0.8)
"""Seconds between kills, drawn at random: often enough to hit many calls mid-flight, rarely enough that the
supervisor's restart backoff (it doubles for a worker that keeps dying) leaves some capacity."""
SEED = 20240605


@dataclass
class Planned:
    name: str
    arguments: dict[str, Any]


@dataclass
class SessionRun:
    client: AgentClient
    rounds: list[list[Planned]]
    round_seconds: list[float] = field(default_factory=list)
    last_round_started: float = 0.0


def plan_rounds(rng: random.Random, session: int) -> list[list[Planned]]:
    """Two idempotent calls for each non-idempotent one; short sleeps so a kill often lands inside a function."""
    rounds = []
    for r in range(ROUNDS):
        calls = []
        for c in range(CALLS_PER_ROUND):
            seconds = round(rng.uniform(0.01, 0.12), 3)
            if rng.random() < 2 / 3:
                calls.append(Planned("slow_echo", {"text": f"s{session}r{r}c{c}", "seconds": seconds}))
            else:
                calls.append(Planned("slow_write", {"tag": f"s{session}r{r}c{c}", "seconds": seconds}))
        rounds.append(calls)
    return rounds


async def drive(run: SessionRun) -> None:
    """One conversation: each round asks for all its calls in one message and waits for the agent's answer."""
    for calls in run.rounds:
        started = run.last_round_started = time.monotonic()
        await run.client.say(" and ".join(call(p.name, **p.arguments) for p in calls))
        await run.client.assistant_text(timeout=DEADLINE + 10)  # generous here; the bound is asserted below
        run.round_seconds.append(time.monotonic() - started)


def pick_victim(client: redis.Redis, rng: random.Random) -> tuple[int, bool] | None:
    """(pid, running a job?) of a live worker, preferably one running a job; None while too few are alive."""
    alive = [w for w in Worker.all(connection=client) if w.pid and _alive(w.pid)]
    if len(alive) <= MIN_ALIVE:
        return None
    busy = [w for w in alive if w.get_state() == "busy"]
    return rng.choice(busy or alive).pid, bool(busy)


async def kill_workers(redis_url: str, rng: random.Random, stop: asyncio.Event, kills: list[bool]) -> None:
    """Kill a worker now and then until ``stop``; ``kills`` gets one entry per kill: was the worker busy?"""
    client = redis.Redis.from_url(redis_url)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(*KILL_EVERY))
            except TimeoutError:
                victim = await asyncio.to_thread(pick_victim, client, rng)
                if victim is not None:
                    os.kill(victim[0], signal.SIGKILL)
                    kills.append(victim[1])
    finally:
        client.close()


def classify(content: str) -> str:
    """What one answer the provider received says happened to the call."""
    value = json.loads(content)
    if isinstance(value, dict) and "error" in value:
        error = value["error"]
        if "was interrupted" in error:
            return "interrupted"
        if "did not finish within" in error:
            return "deadline"
        return f"error: {error}"
    return "ok"


def why_at_deadline(client: redis.Redis, call_id: str) -> str:
    """Why a call was answered at its deadline: still queued (no worker free in time), taken by a worker that
    died before claiming it (the dispatcher watches claimed calls only), or claimed."""
    if client.exists(keys.claim(call_id)):
        return "claimed"
    try:
        status = RQJob.fetch(keys.job_id(call_id), connection=client).get_status()
    except NoSuchJobError:
        return "expired in the queue"
    return {"canceled": "still queued", "started": "taken by a worker that died before claiming it"}.get(
        str(status.value if status else None), f"job {status}"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def test_random_worker_kills_under_load(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """Workers SIGKILLed at random while 540 calls flow"""
    rng = random.Random(SEED)
    workers = start_workers(redis_server.url, logs_dir / "kill-workers.log", processes=WORKERS)
    gateway = Gateway(redis_server.url, logs_dir / "kill-gateway.log").wait_ready()
    counters = redis.Redis.from_url(redis_server.url)
    try:
        runs = [SessionRun(await AgentClient.connect(gateway.url), plan_rounds(rng, s)) for s in range(SESSIONS)]
        for run in runs:
            await run.client.start()  # before any kill: a session learns the backend functions at Settings
        stop, kills = asyncio.Event(), list[bool]()
        killer = asyncio.create_task(kill_workers(redis_server.url, rng, stop, kills))
        began = time.monotonic()
        await asyncio.gather(*(drive(run) for run in runs))
        stop.set()
        await killer
        traffic_seconds = time.monotonic() - began
        last_round_started = max(run.last_round_started for run in runs)

        planned = {p.arguments.get("tag") or p.arguments["text"]: p for run in runs for r in run.rounds for p in r}
        stats = [await run.client.stats() for run in runs]
        requested = sum(s["function_requests"] for s in stats)
        responses = [r for s in stats for r in s["function_responses"]]
        unexpected = sum(s["unexpected_responses"] for s in stats)
        outcomes: dict[str, int] = {}
        for response in responses:
            kind = classify(response["content"])
            outcomes[kind] = outcomes.get(kind, 0) + 1
        finished = [n for run in runs for n in notices(run.client, "finished")]
        slowest_ms = max(n["duration_ms"] for n in finished)
        slowest_round = max(s for run in runs for s in run.round_seconds)

        # A non-idempotent call may start only before its deadline: once every deadline has passed, the
        # "<tag>.started" counters are final.
        await asyncio.sleep(max(0.0, last_round_started + DEADLINE + DEADLINE_MARGIN - time.monotonic()))
        writes = [p for p in planned.values() if p.name == "slow_write"]
        starts = {
            p.arguments["tag"]: int(counters.get(keys.test_counter(p.arguments["tag"] + ".started")) or 0)
            for p in writes
        }
        arguments = {n["id"]: json.loads(n["arguments"]) for run in runs for n in notices(run.client, "started")}
        retried = gateway.log().count("again (idempotent)")
        at_deadline: dict[str, int] = {}
        late = [r["id"] for r in responses if classify(r["content"]) == "deadline"]
        keys_of = backend_keys(counters, late)
        for response in responses:
            if classify(response["content"]) == "deadline":
                why = why_at_deadline(counters, keys_of.get(response["id"], response["id"]))
                at_deadline[why] = at_deadline.get(why, 0) + 1

        reliability.tried = (
            f"{len(planned)} calls ({len(planned) - len(writes)} idempotent `slow_echo`, {len(writes)} "
            f"non-idempotent `slow_write`) on {SESSIONS} sessions over {traffic_seconds:.0f} s; "
            f"{len(kills)} worker processes SIGKILLed at random, {sum(kills)} of them while running a job "
            f"({WORKERS} workers, restarted by the supervisor)"
        )
        reliability.happened = (
            f"{len(responses)} of {requested} calls answered, each once ({unexpected} duplicate answers); "
            f"slowest {slowest_ms / 1000:.2f} s against a {DEADLINE:g} s deadline. {outcomes.get('ok', 0)} ok "
            f"({retried} re-run after their worker died), {outcomes.get('interrupted', 0)} non-idempotent answered "
            f"'interrupted' at once, {outcomes.get('deadline', 0)} answered at the deadline; no `slow_write` started "
            f"twice (max starts per call: {max(starts.values())})"
        )
        reliability.figures.update(
            calls=len(planned),
            sessions=SESSIONS,
            workers=WORKERS,
            kills=len(kills),
            kills_of_busy_workers=sum(kills),
            requested_by_provider=requested,
            answered=len(responses),
            duplicate_answers=unexpected,
            outcomes=outcomes,
            idempotent_reruns=retried,
            answered_at_deadline_because=at_deadline,
            slowest_call_seconds=slowest_ms / 1000,
            slowest_round_seconds=slowest_round,
            non_idempotent_calls=len(writes),
            non_idempotent_started_twice=sum(1 for n in starts.values() if n > 1),
            traffic_seconds=traffic_seconds,
        )

        assert requested == len(planned)
        assert unexpected == 0, "a call was answered twice (or after being given up)"
        for s in stats:
            ids = [r["id"] for r in s["function_responses"]]
            assert len(ids) == len(set(ids)) == s["function_requests"], "each call answered exactly once"
        assert {k for k in outcomes if k not in ("ok", "interrupted", "deadline")} == set(), outcomes
        assert slowest_ms <= (DEADLINE + DEADLINE_MARGIN) * 1000
        assert slowest_round <= DEADLINE + 2 * DEADLINE_MARGIN  # the client's view, including the relay
        assert len(kills) >= 5, "too few kills to mean anything"
        assert len(responses) - outcomes.get("ok", 0) + retried >= 1, "no kill hit a call"
        assert all(n <= 1 for n in starts.values()), {t: n for t, n in starts.items() if n > 1}
        for response in responses:  # a successful slow_write started once and counted one finish
            if response["name"] == "slow_write" and classify(response["content"]) == "ok":
                assert response["content"] == "1"
                assert starts[arguments[response["id"]]["tag"]] == 1
        for run in runs:
            await run.client.close()
    finally:
        counters.close()
        await stop_all(gateway, workers)
