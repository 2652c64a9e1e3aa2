"""A worker process SIGKILLed while it runs many calls at once (``WORKER_CONCURRENCY``).

Every call is answered once: an idempotent one (``slow_echo``) runs again on the other worker, one that is not
(``slow_write``) is answered "interrupted" and never starts twice. The gateway's watchdog notices the dead
worker by its catalog key, for all its calls at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.redis_server import RedisServer
from tests.integration.test_http_and_cli import call_body, post
from tests.support.functions import counter_key
from tests.support.processes import running_gateway, start_workers, wait_until

pytestmark = pytest.mark.faults

ECHOES = 24
WRITES = 8
SECONDS = 1.5


def claims_by_worker(db: redis.Redis) -> Counter[str]:
    """How many calls each worker has claimed (the claim key's value is the worker's id)."""
    return Counter(
        value.decode()
        for key in db.scan_iter(keys.claim("x").removesuffix("x") + "*")
        if (value := db.get(key)) is not None
    )


def test_every_call_of_a_killed_concurrent_worker_is_answered_once(redis_server: RedisServer, logs_dir: Path) -> None:
    db = redis.Redis.from_url(redis_server.url)
    workers = start_workers(redis_server.url, logs_dir / "conc-kill-workers.log", processes=2)
    try:
        with running_gateway(redis_server.url, logs_dir / "conc-kill-gw.log", MAX_PENDING_CALLS="64") as gateway:
            stamp = time.time_ns()
            tags = [f"w{stamp}-{i}" for i in range(WRITES)]
            bodies = [
                call_body("slow_echo", {"text": f"e{i}", "seconds": SECONDS}, f"e{stamp}-{i}") for i in range(ECHOES)
            ]
            bodies += [call_body("slow_write", {"tag": tag, "seconds": SECONDS}, tag) for tag in tags]
            with ThreadPoolExecutor(len(bodies)) as pool:
                answers = pool.map(lambda body: post(gateway, body), bodies)
                busiest = wait_until(
                    lambda: (top := claims_by_worker(db).most_common(1)) and top[0][1] >= 8 and top[0][0],
                    5,
                    "a worker to hold several calls",
                )
                os.kill(int(busiest.split(".")[-2]), signal.SIGKILL)  # worker ids are host.pid.index
                answers = list(answers)
    finally:
        workers.stop()

    assert all(status == 200 for status, _ in answers), answers
    echoes, writes = answers[:ECHOES], answers[ECHOES:]
    for i, (_, body) in enumerate(echoes):  # re-run elsewhere when their worker died: idempotent
        assert json.loads(body["content"]) == {"echo": f"e{i}"}, body
    for _, body in writes:
        assert "content" in body or "interrupted" in body["error"], body
    for tag in tags:
        assert db.get(counter_key(tag + ".started")) == b"1"  # never started twice
    db.close()
