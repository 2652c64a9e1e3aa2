"""The provider's process dies (SIGKILL) while backend calls are pending.

The gateway runs with PROVIDER=deepgram against the standalone simulated agent, a separate process reached over
a real WebSocket with token auth, as Deepgram would be. When it dies without a close frame each client must get
an ``Error`` (UPSTREAM_CLOSED) and a clean close (1011), and the session's pending jobs must be cancelled:
marked with ``keys.cancelled(call_id)`` so that no worker starts them afterwards.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.redis_server import RedisServer, free_port
from tests.faults.helpers import (
    backend_keys,
    call,
    closed,
    notices,
    queue_drained,
    started_count,
    stop_all,
)
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_provider, start_workers, wait_until
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

TOKEN = "dg-fault-test-key"
SESSIONS = 3
CALLS_PER_SESSION = 2
WORKERS = 2
"""Fewer workers than calls: at the crash some calls run, the others wait in the queue."""


async def test_provider_killed_mid_call(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """The provider process SIGKILLed while backend calls are pending"""
    port = free_port()
    provider = start_provider(port, TOKEN, logs_dir / "drop-provider.log")
    # One call per worker at once (WORKER_CONCURRENCY): the others stay queued when the calls are cancelled.
    workers = start_workers(redis_server.url, logs_dir / "drop-workers.log", processes=WORKERS, WORKER_CONCURRENCY="1")
    gateway = Gateway(
        redis_server.url,
        logs_dir / "drop-gateway.log",
        PROVIDER="deepgram",
        DEEPGRAM_URL=f"ws://127.0.0.1:{port}/v1/agent/converse",
        DEEPGRAM_API_KEY=TOKEN,
    ).wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    try:
        clients = [await AgentClient.connect(gateway.url) for _ in range(SESSIONS)]
        tags = [f"drop-s{s}-c{c}" for s in range(SESSIONS) for c in range(CALLS_PER_SESSION)]
        for s, client in enumerate(clients):
            await client.start()
            mine = tags[s * CALLS_PER_SESSION : (s + 1) * CALLS_PER_SESSION]
            await client.say(" and ".join(call("slow_write", tag=tag, seconds=3) for tag in mine))
            for _ in mine:
                await client.expect("BackendFunctionCall", status="started")
        provider_ids = [n["id"] for c in clients for n in notices(c, "started")]
        await asyncio.to_thread(wait_until, lambda: started_count(db, tags) == WORKERS, 5, "the workers to start")
        # Each call is enqueued just after its "started" notice: read the backend keys once they all run.
        keys_of = await asyncio.to_thread(backend_keys, db, provider_ids)
        call_ids = [keys_of[i] for i in provider_ids]

        killed = time.monotonic()
        provider.stop(signal.SIGKILL)
        errors = [await c.expect("Error", timeout=5) for c in clients]
        close_codes = [await closed(c) for c in clients]
        ended_after = time.monotonic() - killed
        await asyncio.to_thread(
            wait_until, lambda: all(db.get(keys.cancelled(i)) == b"1" for i in call_ids), 5, "the cancel markers"
        )
        starts_when_cancelled = started_count(db, tags)
        await asyncio.to_thread(wait_until, lambda: queue_drained(db), 10, "the running calls to end")
        starts_in_the_end = started_count(db, tags)

        # The gateway recovers once the provider is back (same port, new process).
        provider = start_provider(port, TOKEN, logs_dir / "drop-provider-again.log")
        again = await AgentClient.connect(gateway.url)
        await again.start()
        await again.say("What's the weather in Paris?")
        recovered = "Paris" in await again.assistant_text()
        await again.close()

        codes = sorted({e["code"] for e in errors})
        closes = "/".join(str(c) for c in sorted(set(close_codes), key=str))
        cancelled = sum(db.get(keys.cancelled(i)) == b"1" for i in call_ids)
        reliability.tried = (
            f"provider process SIGKILLed with {len(call_ids)} backend calls pending on {SESSIONS} sessions "
            f"({WORKERS} running, {len(call_ids) - WORKERS} queued)"
        )
        reliability.happened = (
            f"every client got Error {'/'.join(codes)} and close code {closes} within {ended_after * 1000:.0f} ms; "
            f"{cancelled}/{len(call_ids)} pending calls marked cancelled, "
            f"{starts_in_the_end - starts_when_cancelled} started after that; the gateway stayed up and served a "
            f"new session once the provider was back: {'yes' if recovered else 'no'}"
        )
        reliability.figures.update(
            sessions=SESSIONS,
            pending_calls=len(call_ids),
            error_codes=codes,
            error_description=errors[0]["description"],
            close_codes=close_codes,
            sessions_ended_within_seconds=ended_after,
            cancelled_markers=cancelled,
            calls_started_before_the_crash=starts_when_cancelled,
            calls_started_after_cancellation=starts_in_the_end - starts_when_cancelled,
            recovered_after_provider_restart=recovered,
        )

        assert codes == ["UPSTREAM_CLOSED"]
        assert close_codes == [1011] * SESSIONS
        assert starts_in_the_end == starts_when_cancelled == WORKERS, "a cancelled call started"
        assert gateway.popen.poll() is None
        assert recovered
        assert "Traceback" not in gateway.log()
    finally:
        db.close()
        provider.stop()
        await stop_all(gateway, workers)
