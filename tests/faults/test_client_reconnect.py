"""Clients' connections cut (no close frame) while their backend calls run, then reconnected with the same
conversation id within RESUME_GRACE, round after round.

Each re-attached client must get ``Conversation(resumed=true)``, ``SettingsApplied``, and then, from what was kept
while it was away, every call's ``finished`` notice and the agent's answer; the provider must get each call's
answer exactly once, and each call must run exactly once on the workers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
import redis

from shared.redis_server import RedisServer
from tests.faults.helpers import call, notices, stop_all
from tests.support.client import AgentClient
from tests.support.functions import counter_key
from tests.support.processes import Gateway, start_workers
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

SESSIONS = 4
CALLS_PER_ROUND = 3
ROUNDS = 2
WORKERS = 2


async def conversation(url: str, name: str, rounds: list[list[str]]) -> dict[str, object]:
    """One client's conversation: each round requests its calls, is cut mid-call and reconnects."""
    client = await AgentClient.connect(url)
    await client.start()
    resumed, answers, texts = 0, [], []
    for tags in rounds:
        await client.say(" and ".join(call("slow_write", tag=tag, seconds=0.5) for tag in tags))
        for _ in tags:
            await client.expect("BackendFunctionCall", status="started", timeout=15)
        client.ws.transport.abort()  # the network goes: no close frame either way
        client = await AgentClient.connect(url)
        greeting = await client.expect("Conversation")
        resumed += greeting["resumed"] is True
        await client.start()
        texts.append(await client.assistant_text(timeout=30))
        answers += [n for n in notices(client, "finished")]
    stats = await client.stats()
    await client.close()
    return {"name": name, "resumed": resumed, "answers": answers, "texts": texts, "stats": stats}


async def test_clients_cut_mid_call_reconnect_and_lose_nothing(
    redis_server: RedisServer, logs_dir: Path, reliability: Entry
):
    """Client connections cut mid-call under load, then re-attached within the window"""
    workers = start_workers(redis_server.url, logs_dir / "reconnect-workers.log", processes=WORKERS)
    gateway = Gateway(redis_server.url, logs_dir / "reconnect-gateway.log", RESUME_GRACE="30").wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    try:
        run = secrets.token_hex(4)
        plans = {
            f"rc-{run}-s{s}": [[f"rc-{run}-s{s}-r{r}-c{c}" for c in range(CALLS_PER_ROUND)] for r in range(ROUNDS)]
            for s in range(SESSIONS)
        }
        results = await asyncio.gather(
            *(conversation(f"{gateway.url}?conversation={cid}", cid, rounds) for cid, rounds in plans.items())
        )
        tags = [tag for rounds in plans.values() for tags in rounds for tag in tags]
        runs = [int(db.get(counter_key(tag)) or 0) for tag in tags]
        upstream = [len(r["stats"]["function_responses"]) for r in results]  # type: ignore[index]
        duplicates = sum(r["stats"]["unexpected_responses"] for r in results)  # type: ignore[index]
        finished = sum(len(r["answers"]) for r in results)  # type: ignore[arg-type]
        resumed = sum(r["resumed"] for r in results)  # type: ignore[misc]
        said = sum(
            all("slow_write returned" in text for text in r["texts"])
            for r in results  # type: ignore[union-attr]
        )
        total = len(tags)
        reliability.tried = (
            f"{SESSIONS * ROUNDS} client connections cut mid-call ({SESSIONS} sessions, {ROUNDS} rounds of "
            f"{CALLS_PER_ROUND} calls), each reconnected with its conversation id"
        )
        reliability.happened = (
            f"{resumed}/{SESSIONS * ROUNDS} reconnects re-attached to their live session; "
            f"{sum(upstream)}/{total} calls answered upstream ({duplicates} twice), {sum(runs)} runs on the workers, "
            f"{finished}/{total} finished notices delivered after the reconnect"
        )
        reliability.figures.update(
            sessions=SESSIONS,
            rounds=ROUNDS,
            calls=total,
            reattached=resumed,
            answered_upstream=sum(upstream),
            answered_twice=duplicates,
            runs=sum(runs),
            finished_notices_delivered=finished,
        )
        assert resumed == SESSIONS * ROUNDS
        assert upstream == [ROUNDS * CALLS_PER_ROUND] * SESSIONS and duplicates == 0
        assert runs == [1] * total, "a call ran twice or never"
        assert finished == total and said == SESSIONS
        assert "Traceback" not in gateway.log()
        assert json.dumps(results)  # plain data: the figures above came from it
    finally:
        db.close()
        await stop_all(gateway, workers)
