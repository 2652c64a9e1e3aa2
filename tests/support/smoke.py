"""``make smoke``: the conversation scenarios against the real providers, to check a release in a minute.

For each provider whose key is set (``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY``) it starts redis, two workers with
the example and test functions, and a gateway with ``PROVIDER`` set to that provider, then drives the scenarios
over the gateway's WebSocket as a client would: a weather call run on a worker, two calls in one request, and a
barge-in (the user speaks again while a backend call runs). Without either key it says it skipped and exits 0.
``--provider simulated`` runs the same scenarios offline (the tests run them in process: ``run_scenarios``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from shared.redis_server import RedisServer
from tests.support.client import AgentClient
from tests.support.processes import Gateway, start_workers

KEYS = {"deepgram": "DEEPGRAM_API_KEY", "openai": "OPENAI_API_KEY"}
TIMEOUT = 30.0
"""Seconds to wait for each expected message: a real model may take several."""
SKIPPED = "skipped: no DEEPGRAM_API_KEY / OPENAI_API_KEY"

Scenario = Callable[[AgentClient], Awaitable[str]]


async def weather(client: AgentClient) -> str:
    """A question whose answer a worker computes."""
    await client.start()
    await client.say("What's the weather in Paris? Use the get_weather function.")
    finished = await client.expect("BackendFunctionCall", name="get_weather", status="finished", timeout=TIMEOUT)
    assert finished["ok"], f"get_weather failed: {finished.get('error')}"
    return await client.assistant_text(TIMEOUT)


async def two_calls(client: AgentClient) -> str:
    """Two backend functions asked for in one user turn (one request with both, for the simulated agent)."""
    await client.start()
    await client.say(
        "The weather in Paris, and the current time in Europe/Paris? Use get_weather and get_current_time at once."
    )
    wanted = {"get_weather", "get_current_time"}
    done: dict[str, bool] = {}  # a real model may call something else too: only the two wanted calls count
    while not wanted <= set(done):
        notice = await client.expect("BackendFunctionCall", status="finished", timeout=TIMEOUT)
        done[notice["name"]] = notice["ok"]
    assert all(done[name] for name in wanted), done
    return await client.assistant_text(TIMEOUT)


async def barge_in(client: AgentClient) -> str:
    """The user speaks again while a slow backend call runs: the call ends once (cancelled, or finished if the
    provider let it finish), and the conversation goes on. Returns how the slow call ended."""
    await client.start()
    await client.say('Please call slow_echo {"text": "late", "seconds": 3} now.')
    await client.expect("BackendFunctionCall", name="slow_echo", status="started", timeout=TIMEOUT)
    await client.say("Never mind. What's the weather in Paris?")
    ended: dict[str, str] = {}  # name → how its call ended; the two calls' notices may come in either order
    while not {"slow_echo", "get_weather"} <= set(ended):
        notice = await client.expect("BackendFunctionCall", timeout=TIMEOUT)
        if notice["status"] != "started":
            assert notice["name"] not in ended, f"{notice['name']} ended twice"
            ended[notice["name"]] = notice["status"]
    assert ended["get_weather"] == "finished", ended
    await client.assistant_text(TIMEOUT)
    return ended["slow_echo"]


SCENARIOS: dict[str, Scenario] = {"weather": weather, "two_calls": two_calls, "barge_in": barge_in}


async def run_scenarios(url: str) -> dict[str, str]:
    """Each scenario in its own session; what each returned (or ``FAILED: ...``)."""
    results: dict[str, str] = {}
    for name, scenario in SCENARIOS.items():
        client = await AgentClient.connect(url)
        try:
            results[name] = await scenario(client)
        except (AssertionError, TimeoutError, OSError, ConnectionClosed) as exc:
            results[name] = f"FAILED: {type(exc).__name__}: {exc}"
        finally:
            await client.close()
    return results


def run(providers: list[str], logs: Path) -> bool:
    """Redis, workers, then one gateway per provider with the scenarios; True when all passed."""
    passed = True
    with RedisServer() as redis_server:
        workers = start_workers(redis_server.url, logs / "workers.log")
        try:
            for provider in providers:
                gateway = Gateway(redis_server.url, logs / f"gateway-{provider}.log", PROVIDER=provider).wait_ready()
                started = time.monotonic()
                try:
                    results = asyncio.run(run_scenarios(gateway.url))
                finally:
                    gateway.stop()
                for name, outcome in results.items():
                    passed &= not outcome.startswith("FAILED")
                    print(f"{provider:9} {name:10} {outcome[:160]!r}")
                print(f"{provider}: {time.monotonic() - started:.1f} s (logs in {logs})")
        finally:
            workers.stop()
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=["simulated", *KEYS], help="run against this provider only")
    args = parser.parse_args(argv)
    providers = [args.provider] if args.provider else [name for name, key in KEYS.items() if os.environ.get(key)]
    if not providers:
        print(SKIPPED)
        return 0
    for name in set(KEYS) - set(providers) if not args.provider else ():
        print(f"skipped {name}: no {KEYS[name]}")
    with tempfile.TemporaryDirectory(prefix="smoke-") as logs:
        return 0 if run(providers, Path(logs)) else 1


if __name__ == "__main__":
    sys.exit(main())
