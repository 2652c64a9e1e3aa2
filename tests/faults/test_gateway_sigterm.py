"""The gateway gets SIGTERM (a deploy, a scale-down) while sessions are open and backend calls are pending.

It must stop accepting connections, answer or cancel every pending call (a cancelled call is marked with
``keys.cancelled(call_id)`` so no worker starts it later), close each session with 1001 (going away), and exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from shared import keys
from shared.redis_server import RedisServer
from tests.faults.helpers import backend_keys, call, closed, notices, queue_drained, started_count, stop_all
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_workers, wait_until
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

BUSY_SESSIONS = 4
CALLS_PER_SESSION = 2
IDLE_SESSIONS = 2
WORKERS = 2
CONNECT_ATTEMPTS = 5


async def refused(url: str) -> bool:
    """True when a new WebSocket connection cannot be opened."""
    try:
        async with connect(url, open_timeout=3):
            return False
    except (OSError, InvalidHandshake, TimeoutError):  # a refused socket, or a handshake the server refuses
        return True


async def test_sigterm_with_pending_calls(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """The gateway SIGTERMed with sessions open and calls pending"""
    # One call per worker at once (WORKER_CONCURRENCY): the others stay queued when the gateway cancels them.
    workers = start_workers(redis_server.url, logs_dir / "term-workers.log", processes=WORKERS, WORKER_CONCURRENCY="1")
    gateway = Gateway(redis_server.url, logs_dir / "term-gateway.log").wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    try:
        busy = [await AgentClient.connect(gateway.url) for _ in range(BUSY_SESSIONS)]
        idle = [await AgentClient.connect(gateway.url) for _ in range(IDLE_SESSIONS)]
        tags = [f"term-s{s}-c{c}" for s in range(BUSY_SESSIONS) for c in range(CALLS_PER_SESSION)]
        for client in idle:
            await client.start()
        for s, client in enumerate(busy):
            await client.start()
            mine = tags[s * CALLS_PER_SESSION : (s + 1) * CALLS_PER_SESSION]
            await client.say(" and ".join(call("slow_write", tag=tag, seconds=3) for tag in mine))
            for _ in mine:
                await client.expect("BackendFunctionCall", status="started")
        provider_ids = [n["id"] for c in busy for n in notices(c, "started")]
        await asyncio.to_thread(wait_until, lambda: started_count(db, tags) == WORKERS, 5, "the workers to start")
        # Each call is enqueued just after its "started" notice: read the backend keys once they all run.
        keys_of = await asyncio.to_thread(backend_keys, db, provider_ids)
        call_ids = [keys_of[i] for i in provider_ids]

        terminated = time.monotonic()
        gateway.popen.send_signal(signal.SIGTERM)
        close_codes = [await closed(c) for c in busy + idle]
        closed_after = time.monotonic() - terminated
        attempts = [await refused(gateway.url) for _ in range(CONNECT_ATTEMPTS)]
        exit_code = await asyncio.to_thread(gateway.popen.wait, 15)
        exited_after = time.monotonic() - terminated

        answered = {keys_of.get(n["id"], n["id"]) for c in busy for n in notices(c, "finished")}
        await asyncio.to_thread(
            wait_until,
            lambda: all(i in answered or db.get(keys.cancelled(i)) == b"1" for i in call_ids),
            5,
            "every pending call to be answered or cancelled",
        )
        cancelled = [i for i in call_ids if db.get(keys.cancelled(i)) == b"1"]
        starts_when_cancelled = started_count(db, tags)
        await asyncio.to_thread(wait_until, lambda: queue_drained(db), 10, "the running calls to end")
        starts_in_the_end = started_count(db, tags)
        log = gateway.log()

        reliability.tried = (
            f"SIGTERM to the gateway with {BUSY_SESSIONS + IDLE_SESSIONS} sessions open and {len(call_ids)} backend "
            f"calls pending ({WORKERS} running, {len(call_ids) - WORKERS} queued); {CONNECT_ATTEMPTS} connection "
            f"attempts during shutdown"
        )
        reliability.happened = (
            f"all sessions closed with {'/'.join(str(c) for c in sorted(set(close_codes), key=str))} within "
            f"{closed_after * 1000:.0f} ms; "
            f"{sum(attempts)}/{CONNECT_ATTEMPTS} new connections refused; pending calls: {len(answered)} answered, "
            f"{len(cancelled)} cancelled, {starts_in_the_end - starts_when_cancelled} started afterwards; exit code "
            f"{exit_code} after {exited_after:.2f} s"
        )
        reliability.figures.update(
            sessions=BUSY_SESSIONS + IDLE_SESSIONS,
            pending_calls=len(call_ids),
            close_codes=close_codes,
            sessions_closed_within_seconds=closed_after,
            connections_refused=f"{sum(attempts)}/{CONNECT_ATTEMPTS}",
            answered=len(answered),
            cancelled=len(cancelled),
            calls_started_after_cancellation=starts_in_the_end - starts_when_cancelled,
            exit_code=exit_code,
            exited_after_seconds=exited_after,
        )

        assert close_codes == [1001] * (BUSY_SESSIONS + IDLE_SESSIONS)
        assert all(attempts)
        assert len(answered) + len(cancelled) == len(call_ids)
        assert starts_in_the_end == starts_when_cancelled, "a call started after the gateway cancelled it"
        assert exit_code == 0
        assert "Traceback" not in log and "internal error" not in log
    finally:
        db.close()
        await stop_all(gateway, workers)
