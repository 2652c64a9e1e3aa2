"""The catalog as a session start reads it: the last known functions during a gap, a short retry before any."""

from __future__ import annotations

import asyncio
import json
import time

import fakeredis
import pytest
import redis

from gateway.catalog import Catalog
from gateway.http import HttpRequest
from gateway.routes import FunctionCallEndpoint
from shared import keys
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec, WorkerCatalog

WEATHER = FunctionSpec(name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}})
NOTE = FunctionSpec(name="add_note", description="Note.", parameters={"type": "object", "properties": {}})


async def publish(client: fakeredis.FakeAsyncRedis, worker: str, *specs: FunctionSpec) -> None:
    entry = WorkerCatalog(worker_id=worker, queues=["default"], functions=list(specs), published_at=time.time())
    await client.set(keys.catalog(worker), entry.to_json())
    await client.sadd(keys.CATALOG_INDEX, worker)


async def test_a_redis_failure_after_a_read_gives_the_last_known_functions_at_once() -> None:
    server = fakeredis.FakeServer()
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)
    await publish(catalog._redis, "w1", WEATHER)
    assert await catalog.session_functions() == {"get_weather": WEATHER}
    server.connected = False
    assert await catalog.session_functions(wait=30) == {"get_weather": WEATHER}  # no retrying: it is known


async def test_every_name_ever_owned_is_remembered() -> None:
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), max_age=0)
    await publish(catalog._redis, "w1", WEATHER)
    await catalog.functions()
    await catalog._redis.flushall()
    await publish(catalog._redis, "w2", NOTE)  # a deploy replaced get_weather's worker by add_note's
    assert await catalog.session_functions() == {"add_note": NOTE}
    assert catalog.ever_owned == {"get_weather": WEATHER, "add_note": NOTE}


async def test_with_no_catalog_ever_read_a_redis_failure_is_retried_briefly() -> None:
    server = fakeredis.FakeServer()
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)
    await publish(catalog._redis, "w1", WEATHER)
    server.connected = False

    async def redis_returns() -> None:
        await asyncio.sleep(0.3)
        server.connected = True

    back = asyncio.create_task(redis_returns())
    assert await catalog.session_functions(wait=30, retry_every=0.05) == {"get_weather": WEATHER}
    await back


async def test_with_no_catalog_ever_read_the_redis_error_is_raised_after_the_wait() -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)
    with pytest.raises(redis.ConnectionError):
        await catalog.session_functions(wait=0.2, retry_every=0.05)


async def test_an_empty_catalog_is_empty_when_none_was_ever_seen() -> None:
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), max_age=0)
    assert await catalog.session_functions() == {}


class _Dispatcher:
    """Records the calls POST /function-call hands on (the real one would enqueue them)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(
        self, call_id: str, name: str, arguments: str, spec: FunctionSpec, *rest: str, **options: str
    ) -> CallResult:
        self.calls.append(name)
        return CallResult(call_id=call_id, ok=True, content='{"ok": true}')


@pytest.mark.parametrize("gap", ["workers restarting", "redis down"])
async def test_post_function_call_keeps_a_backend_function_through_a_catalog_gap(gap: str) -> None:
    """Over HTTP too, a catalog gap does not turn a backend function into an unknown one."""
    server = fakeredis.FakeServer()
    catalog = Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)
    await publish(catalog._redis, "w1", WEATHER)
    await catalog.functions()
    if gap == "redis down":
        server.connected = False
    else:
        await catalog._redis.flushall()  # the restarting workers have not republished yet
    dispatcher = _Dispatcher()
    endpoint = FunctionCallEndpoint(Config(), dispatcher, catalog, lambda: 0)  # type: ignore[arg-type]
    body = json.dumps({"id": "h1", "name": "get_weather", "arguments": "{}"}).encode()
    request = HttpRequest("POST", "/function-call", {"content-type": "application/json"}, body, "127.0.0.1")
    response = await endpoint.handle(request)
    assert (response.status, json.loads(response.body)) == (200, {"id": "h1", "content": '{"ok": true}'})
    assert dispatcher.calls == ["get_weather"]
