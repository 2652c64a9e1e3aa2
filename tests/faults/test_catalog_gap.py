"""Sessions that start while the backend catalog cannot be read (issue 12 item 8).

Redis is killed, a session starts during the outage; Redis comes back empty, and another session starts before
any worker has republished its catalog (CATALOG_TTL=30: the heartbeat comes every 10 s). Both sessions must
still get the backend functions (the gateway's last known catalog), and their backend-named calls must run on
a worker, never go to the client.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.redis_server import RedisServer
from tests.faults.helpers import call, notices, stop_all
from tests.faults.test_redis_restart import RestartableRedis
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_workers
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

BACKEND = "slow_echo"
PAST_CACHE = 1.5
"""Seconds to wait before a session starts, so the gateway's one-second catalog cache cannot answer for Redis."""


async def settings_and_functions(client: AgentClient) -> tuple[list[str], list[str]]:
    """Start the session; return (functions the provider was told about, gateway Warning codes so far)."""
    await client.start()
    warnings = [m["code"] for m in client.messages() if m.get("type") == "Warning"]
    return (await client.stats())["settings"], warnings


async def backend_answer(client: AgentClient, text: str, tries: int = 3) -> dict[str, object]:
    """Ask for a backend call; return its ``finished`` notice. Fails if the call reaches the client instead.

    Asked again (up to ``tries`` times) while the answer is an error: the workers reconnect to the restarted Redis
    on their own schedule, and a call made before they are back ends at its deadline with an error result.
    """
    for _ in range(tries):
        await client.say(call(BACKEND, text=text, seconds=0))
        message = await client.expect("BackendFunctionCall", "FunctionCallRequest", timeout=20)
        assert message["type"] == "BackendFunctionCall", f"the call went to the client: {message}"
        finished = await client.expect("BackendFunctionCall", status="finished", timeout=20)
        if finished["ok"]:
            break
    return finished


@pytest.mark.attack("Sessions started while the backend catalog is unreadable")
async def test_sessions_started_during_a_catalog_gap_keep_backend_functions(logs_dir, reliability: Entry):
    """Sessions started while Redis is down, and just after it returned empty, before workers republish"""
    redis_server = RestartableRedis()
    workers = start_workers(redis_server.url, logs_dir / "gap-workers.log", processes=2, CATALOG_TTL="30")
    gateway = Gateway(redis_server.url, logs_dir / "gap-gateway.log").wait_ready()
    clients: list[AgentClient] = []
    try:
        first = await AgentClient.connect(gateway.url)
        clients.append(first)
        known, _ = await settings_and_functions(first)  # the gateway reads the catalog once
        assert BACKEND in known

        redis_server.server.kill()
        await asyncio.sleep(PAST_CACHE)
        during = await AgentClient.connect(gateway.url)
        clients.append(during)
        during_functions, during_warnings = await settings_and_functions(during)

        redis_server.server = RedisServer(port=redis_server.port).start()  # back, and empty
        await asyncio.sleep(PAST_CACHE)  # still well before the workers' next heartbeat (10 s)
        after = await AgentClient.connect(gateway.url)
        clients.append(after)
        after_functions, after_warnings = await settings_and_functions(after)

        answers = [await backend_answer(c, name) for c, name in ((during, "during"), (after, "after"))]
        to_client = [m for c in (during, after) for m in c.messages() if m.get("type") == "FunctionCallRequest"]

        reliability.tried = (
            "a session started while redis-server was down, another just after it returned empty "
            "(workers republish every 10 s), each then asking for a backend call"
        )
        reliability.happened = (
            f"functions offered: during the outage {len(during_functions)}, after the restart "
            f"{len(after_functions)} (before: {len(known)}); calls answered by workers: "
            f"{sum(bool(a.get('ok')) for a in answers)}/{len(answers)}; calls sent to the client: {len(to_client)}"
        )
        assert during_functions == known and "BACKEND_UNAVAILABLE" not in during_warnings
        assert after_functions == known and "BACKEND_UNAVAILABLE" not in after_warnings
        assert to_client == []
        assert all(a["ok"] and a["worker"] for a in answers), answers
        assert notices(during, "finished") and notices(after, "finished")
    finally:
        for client in clients:
            await client.close()
        try:
            await stop_all(gateway, workers)
        finally:
            redis_server.stop()
