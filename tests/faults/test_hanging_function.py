"""A function that never returns (``hang_forever``, timeout 1.5 s), on a deployment with a single worker.

The gateway must answer the call at its deadline, and the worker must go on serving the next job: the hung
function keeps one of the process's ``WORKER_CONCURRENCY`` slots (Python cannot stop a thread; the worker marks
it timed out or cancelled and logs it), so the next call runs on the same worker, not on a replacement the
supervisor had to start.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shared.redis_server import RedisServer
from tests.faults.helpers import DEADLINE_MARGIN, call, notices, stop_all
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_workers, wait_until
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

HANG_DEADLINE = 1.5
NEXT_DEADLINE = 3.0
"""get_current_time's timeout."""
ROUNDS = 3


async def test_hanging_function_is_answered_and_frees_the_worker(
    redis_server: RedisServer, logs_dir: Path, reliability: Entry
):
    """A function that hangs forever, on the only worker"""
    workers = start_workers(redis_server.url, logs_dir / "hang-workers.log", processes=1)
    gateway = Gateway(redis_server.url, logs_dir / "hang-gateway.log").wait_ready()
    try:
        client = await AgentClient.connect(gateway.url)
        await client.start()
        hang_seconds, next_seconds, hang_texts, next_ok = [], [], [], []
        for _ in range(ROUNDS):
            started = time.monotonic()
            await client.say(call("hang_forever"))
            hang_texts.append(await client.assistant_text(timeout=HANG_DEADLINE + 10))
            hang_seconds.append(time.monotonic() - started)
            # At once: the worker is still inside hang_forever (for ever: its thread cannot be stopped).
            started = time.monotonic()
            await client.say(call("get_current_time", timezone="UTC"))
            next_ok.append('"error"' not in await client.assistant_text(timeout=NEXT_DEADLINE + 10))
            next_seconds.append(time.monotonic() - started)
        stats = await client.stats()
        finished = notices(client, "finished")
        workers_seen = {n["worker"] for n in finished if n["name"] == "get_current_time"}
        await client.close()
        deaths = workers.log().count("died (")

        reliability.tried = (
            f"{ROUNDS} calls of `hang_forever` (deadline {HANG_DEADLINE:g} s) on a single worker, each followed "
            f"at once by a `get_current_time` call"
        )
        reliability.happened = (
            f"each hang answered with an error after {min(hang_seconds):.2f}-{max(hang_seconds):.2f} s; the next "
            f"call succeeded {sum(next_ok)}/{ROUNDS} times after {min(next_seconds):.2f}-{max(next_seconds):.2f} s "
            f"(deadline {NEXT_DEADLINE:g} s) on the same worker process ({len(workers_seen)} worker id, "
            f"{deaths} worker restarts); {stats['unexpected_responses']} late or duplicate answers reached the provider"
        )
        reliability.figures.update(
            hang_answered_after_seconds=[round(s, 2) for s in hang_seconds],
            next_call_answered_after_seconds=[round(s, 2) for s in next_seconds],
            next_call_ok=next_ok,
            worker_ids=sorted(workers_seen),
            worker_restarts=deaths,
            responses_to_provider=len(stats["function_responses"]),
            unexpected_responses=stats["unexpected_responses"],
        )

        # The gateway's deadline and the worker's timeout fall due together: either answer is the one error.
        answers = (f"did not finish within {HANG_DEADLINE:g} s", f"timed out after {HANG_DEADLINE:g} s")
        assert all(any(answer in text for answer in answers) for text in hang_texts), hang_texts
        assert all(HANG_DEADLINE <= s <= HANG_DEADLINE + DEADLINE_MARGIN for s in hang_seconds), hang_seconds
        assert all(next_ok)
        assert all(s <= NEXT_DEADLINE + DEADLINE_MARGIN for s in next_seconds), next_seconds
        assert len(workers_seen) == 1 and deaths == 0, "the worker was replaced instead of freed"
        assert len(stats["function_responses"]) == 2 * ROUNDS and stats["unexpected_responses"] == 0

        def given_up() -> int:  # by the worker, within a tick: past its timeout, or cancelled at the deadline
            log = workers.log()
            return log.count("hang_forever timed out") + log.count("hang_forever cancelled while running")

        wait_until(lambda: given_up() >= ROUNDS, 2, "the worker to give up each hang")
        assert given_up() == ROUNDS
    finally:
        await stop_all(gateway, workers)
