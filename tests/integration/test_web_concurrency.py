"""WEB_CONCURRENCY=2: two gateway processes share one port under a supervisor that replaces one that dies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from shared.redis_server import RedisServer
from tests.support.client import AgentClient
from tests.support.processes import Gateway, Process, http_get, wait_until

SESSIONS = 12


def serving_pids(gateway: Gateway) -> set[int]:
    """Gateway processes that have logged a session, from the log lines' ``[pid]``."""
    return {int(pid) for pid in re.findall(r"\[(\d+)\] gateway\.session: session \w+: client connected", gateway.log())}


def listening_pids(gateway: Gateway) -> list[int]:
    return [int(pid) for pid in re.findall(r"gateway \(pid (\d+)\) listening", gateway.log())]


async def weather_calls(url: str, sessions: int) -> list[str]:
    async def one() -> str:
        client = await AgentClient.connect(url)
        try:
            await client.start()
            await client.say("What's the weather in Paris?")
            return await client.assistant_text()
        finally:
            await client.close()

    return await asyncio.gather(*(one() for _ in range(sessions)))


async def test_gateway_processes_share_the_port(redis_server: RedisServer, workers: Process, logs_dir: Path):
    gateway = Gateway(redis_server.url, logs_dir / "gw-concurrency.log", WEB_CONCURRENCY="2").wait_ready()
    try:
        wait_until(lambda: len(listening_pids(gateway)) == 2, 15, "both gateway processes")
        answers = await weather_calls(gateway.url, SESSIONS)
        assert all("Paris" in a for a in answers)
        assert serving_pids(gateway) == set(listening_pids(gateway))  # the kernel spread sessions over both

        first = listening_pids(gateway)[0]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(listening_pids(gateway)) == 3, 15, "the supervisor to replace the killed process")
        assert http_get(gateway.http + "/healthz")[0] == 200
        answers = await weather_calls(gateway.url, 4)
        assert all("Paris" in a for a in answers)
        assert re.search(rf"gateway \d \(pid {first}\) died \(signal SIGKILL\)", gateway.log())
    finally:
        assert gateway.stop() == 0, gateway.log()[-3000:]
    assert "all gateways stopped" in gateway.log()
