"""Workers SIGKILLed at random while hundreds of calls flow through the gateway.

The promise under test (``gateway/watchdog.py``, ``Watchdog``): every backend call is answered by its
deadline and exactly once; an idempotent call whose worker dies may run again elsewhere, a call that is not
idempotent never starts twice. The provider's own bookkeeping (the simulated agent's stats) says what reached
it; Redis counters written by ``slow_write`` say how often each non-idempotent call really started.

Besides the random kills, every :data:`WINDOW_EVERY`-th kill deliberately lands between a worker's dequeue
(``BLMOVE``) and its claim: one extra worker pauses there (the test-only ``VFG_TEST_PAUSE_BEFORE_CLAIM``), and the
killer strikes while it holds an unclaimed call, which the gateway must queue again rather than leave to the
deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
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
from tests.support.functions import counter_key
from tests.support.processes import Gateway, live_workers, start_workers, wait_until
from tests.support.reliability import Entry
from workers.callworker import TEST_PAUSE_ENV

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
WINDOW_EVERY = 3
"""Every third kill targets the slow claimer in its dequeue→claim window (when it is in it)."""
WINDOW_TRIES = 4
"""Ticks a window turn waits for the slow claimer to be in its window before a random kill takes the turn."""
PAUSE = 0.25
"""Seconds the slow claimer pauses between taking a call and claiming it: wide enough to aim a kill at."""
_PAUSE_LINE = re.compile(r"\.(\d+)\.\d+ WARNING workers\.rq_records: test-only pause of \S+ s before claiming (\S+)$")


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


def pick_victim(client: redis.Redis, rng: random.Random, slow: set[int]) -> tuple[int, bool] | None:
    """(pid, running a job?) of a live worker, preferably one running a job; None while too few are alive. The slow
    claimer (pids ``slow``) is left to :func:`in_window`."""
    alive = [w for w in Worker.all(connection=client) if w.pid and w.pid not in slow and _alive(w.pid)]
    if len(alive) <= MIN_ALIVE:
        return None
    busy = [w for w in alive if w.get_state() == "busy"]
    return rng.choice(busy or alive).pid, bool(busy)


def in_window(client: redis.Redis, slow_log: Path) -> tuple[int, str] | None:
    """(pid, job id) when the slow claimer's latest log line says it paused before claiming a call that is still
    unclaimed: it sits between its dequeue and its claim."""
    lines = slow_log.read_text(errors="replace").splitlines()
    match = _PAUSE_LINE.search(lines[-1]) if lines else None
    if match is None:
        return None
    pid, job_id = int(match.group(1)), match.group(2)
    claim = keys.claim_of_job(job_id)
    if claim is None or client.exists(claim) or not _alive(pid):
        return None
    return pid, job_id


def slow_pids(slow_log: Path) -> set[int]:
    """Pids of the slow claimer's processes (its log is its own), so random kills leave it to the window kills."""
    found = re.findall(r"\.(\d+)\.\d+ (?:INFO|WARNING)", slow_log.read_text(errors="replace"))
    return {int(pid) for pid in found}


async def kill_workers(
    redis_url: str, rng: random.Random, stop: asyncio.Event, kills: list[bool], slow_log: Path, window: list[str]
) -> None:
    """Kill a worker now and then until ``stop``; ``kills`` gets one entry per kill: was the worker busy? Every
    :data:`WINDOW_EVERY`-th kill goes to the slow claimer if it is in its window; ``window`` gets the job id of
    each such kill that, checked once the process was dead, had indeed not been claimed."""
    client = redis.Redis.from_url(redis_url)
    missed = 0  # window turns without the slow claimer in its window (it may be restarting): a few, then move on
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), rng.uniform(*KILL_EVERY))
            except TimeoutError:
                if len(kills) % WINDOW_EVERY == WINDOW_EVERY - 1 and missed < WINDOW_TRIES:
                    target = await asyncio.to_thread(in_window, client, slow_log)
                    if target is None:
                        missed += 1
                        continue
                    missed = 0
                    os.kill(target[0], signal.SIGKILL)
                    kills.append(False)  # not running a job: it has not even claimed one
                    await asyncio.to_thread(_wait_dead, target[0])
                    if not client.exists(keys.claim_of_job(target[1])):  # type: ignore[arg-type]
                        window.append(target[1])
                    continue
                missed = 0
                slow = await asyncio.to_thread(slow_pids, slow_log)
                victim = await asyncio.to_thread(pick_victim, client, rng, slow)
                if victim is not None:
                    os.kill(victim[0], signal.SIGKILL)
                    kills.append(victim[1])
    finally:
        client.close()


def _wait_dead(pid: int) -> None:
    for _ in range(200):
        if not _alive(pid):
            return
        time.sleep(0.01)


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


def why_at_deadline(client: redis.Redis, call_id: str, gateway: str) -> str:
    """Why a call was answered at its deadline: still queued (no worker free in time), taken by a worker that
    died before claiming it (and not queued again in time), or claimed."""
    if client.exists(keys.claim(call_id)):
        return "claimed"
    try:
        status = RQJob.fetch(keys.job_id(call_id, gateway=gateway), connection=client).get_status()
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
    # One call per worker at once: the traffic lasts long enough for many kills (a concurrent worker killed
    # mid-batch: test_concurrent_worker_killed.py).
    workers = start_workers(redis_server.url, logs_dir / "kill-workers.log", processes=WORKERS, WORKER_CONCURRENCY="1")
    slow_log = logs_dir / "kill-slow-claimer.log"
    slow = start_workers(
        redis_server.url, slow_log, processes=1, WORKER_CONCURRENCY="1", **{TEST_PAUSE_ENV: str(PAUSE)}
    )
    wait_until(lambda: len(live_workers(redis_server.url)) > WORKERS, 30, "the slow claimer")
    gateway = Gateway(redis_server.url, logs_dir / "kill-gateway.log").wait_ready()
    counters = redis.Redis.from_url(redis_server.url)
    try:
        runs = [SessionRun(await AgentClient.connect(gateway.url), plan_rounds(rng, s)) for s in range(SESSIONS)]
        for run in runs:
            await run.client.start()  # before any kill: a session learns the backend functions at Settings
        stop, kills, window = asyncio.Event(), list[bool](), list[str]()
        killer = asyncio.create_task(kill_workers(redis_server.url, rng, stop, kills, slow_log, window))
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
            p.arguments["tag"]: int(counters.get(counter_key(p.arguments["tag"] + ".started")) or 0) for p in writes
        }
        arguments = {n["id"]: json.loads(n["arguments"]) for run in runs for n in notices(run.client, "started")}
        retried = gateway.log().count("again (idempotent)")
        requeued = gateway.log().count("died before claiming it; queued again")
        [gateway_ref] = [k.decode().rsplit(":", 1)[1] for k in counters.keys(keys.gateway_alive("*"))]
        at_deadline: dict[str, int] = {}
        late = [r["id"] for r in responses if classify(r["content"]) == "deadline"]
        keys_of = backend_keys(counters, late)
        for response in responses:
            if classify(response["content"]) == "deadline":
                why = why_at_deadline(counters, keys_of.get(response["id"], response["id"]), gateway_ref)
                at_deadline[why] = at_deadline.get(why, 0) + 1

        reliability.tried = (
            f"{len(planned)} calls ({len(planned) - len(writes)} idempotent `slow_echo`, {len(writes)} "
            f"non-idempotent `slow_write`) on {SESSIONS} sessions over {traffic_seconds:.0f} s; "
            f"{len(kills)} worker processes SIGKILLed at random, {sum(kills)} of them while running a job "
            f"({WORKERS} workers, restarted by the supervisor), {len(window)} of them aimed between a worker's "
            f"dequeue and its claim (a sixth, slow-claiming worker)"
        )
        reliability.happened = (
            f"{len(responses)} of {requested} calls answered, each once ({unexpected} duplicate answers); "
            f"slowest {slowest_ms / 1000:.2f} s against a {DEADLINE:g} s deadline. {outcomes.get('ok', 0)} ok "
            f"({retried} re-run after their worker died, {requeued} queued again after their worker died before "
            f"claiming them), {outcomes.get('interrupted', 0)} non-idempotent answered "
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
            kills_between_dequeue_and_claim=len(window),
            requeued_unclaimed=requeued,
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
        assert window, "no kill landed between a dequeue and its claim"
        assert requeued >= 1, "no call taken by a worker that died before claiming it was queued again"
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
        await stop_all(gateway, workers, slow)
