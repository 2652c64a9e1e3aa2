"""A session's budgets and refusals, with the real simulated upstream and the catalog on fakeredis.

Settings the upstream cannot honour are refused before anything reaches it; big text frames after Settings are
dropped unparsed; bytes are rate-limited as well as frames; a catalog gap never hands a backend name to the client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

import fakeredis
import pytest

from gateway import session as session_module
from gateway.catalog import Catalog
from gateway.providers.simulated.adapter import SimulatedProvider
from gateway.session import Session
from shared import keys
from shared.config import Config
from shared.envelopes import FunctionSpec, Result, WorkerCatalog
from shared.protocol import ErrorCode

WEATHER = FunctionSpec(name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}})


class Client:
    """The client side of a session: sends ``frames`` one by one, records what the gateway sends back."""

    def __init__(self, frames: Iterable[str | bytes]) -> None:
        self.frames = list(frames)
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    async def __aiter__(self) -> Any:
        for frame in self.frames:
            yield frame

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, self.sent) if type_ is None or m["type"] == type_]


class Dispatcher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, FunctionSpec]] = []

    async def call(
        self, call_id: str, name: str, arguments: str, spec: FunctionSpec, session_id: str, principal: str = ""
    ) -> Result:
        self.calls.append((name, spec))
        return Result(call_id=call_id, ok=True, content='{"ok": true}', worker_id="w1")


def settings(**fields: Any) -> str:
    return json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Test."}}, **fields})


async def publish(redis: fakeredis.FakeAsyncRedis, *specs: FunctionSpec) -> None:
    entry = WorkerCatalog(worker_id="w1", queues=["default"], functions=list(specs), published_at=time.time())
    await redis.set(keys.catalog("w1"), entry.to_json())
    await redis.sadd(keys.CATALOG_INDEX, "w1")


def new_session(frames: Iterable[str | bytes], catalog: Catalog, **config: Any) -> tuple[Session, Client]:
    client = Client(frames)
    session = Session(client, None, Dispatcher(), catalog, Config(**config))  # type: ignore[arg-type]
    session.upstream = SimulatedProvider()
    return session, client


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def catalog(server: fakeredis.FakeServer) -> Catalog:
    return Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)


def agent_of(session: Session) -> Any:
    return session.upstream.agent  # type: ignore[union-attr]


# --- item 4: audio formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "problem"),
    [
        ({"input": {"encoding": "linear16", "sample_rate": 0}}, "greater than or equal to 1"),
        ({"input": {"encoding": "linear16", "sample_rate": 2_000_000_000}}, "less than or equal to 192000"),
        ({"output": {"encoding": "linear16", "sample_rate": True}}, "valid integer"),
        ({"output": {"encoding": "linear16", "sample_rate": 96000}}, "8000 to 48000 Hz"),
        ({"output": {"encoding": "mulaw", "sample_rate": 8000}}, "audio.output.encoding 'mulaw'"),
    ],
)
async def test_unsupported_audio_is_refused_before_the_upstream_hears_anything(
    catalog: Catalog, audio: dict[str, Any], problem: str
) -> None:
    session, client = new_session([settings(audio=audio), b"\0" * 640], catalog)
    await session._client_to_upstream()
    [error] = client.messages("Error")
    assert error["code"] == ErrorCode.INVALID_SETTINGS and problem in error["description"]
    assert client.closed == (1008, ErrorCode.INVALID_SETTINGS)
    assert not agent_of(session).settings_applied and agent_of(session).stats["audio_frames"] == 0


# --- item 9: frame and byte budgets ---------------------------------------------------------------------


async def test_too_many_functions_refuse_the_settings(catalog: Catalog) -> None:
    functions = [{"name": f"f{i}"} for i in range(5)]
    frame = json.dumps({"type": "Settings", "agent": {"think": {"functions": functions}}})
    session, client = new_session([frame], catalog, max_settings_functions=4)
    await session._client_to_upstream()
    [error] = client.messages("Error")
    assert error["code"] == ErrorCode.INVALID_SETTINGS and "at most 4" in error["description"]
    assert not agent_of(session).settings_applied


async def test_a_big_text_frame_after_settings_is_dropped_unparsed(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real_parse = session_module.parse_json_object
    monkeypatch.setattr(
        session_module, "parse_json_object", lambda text, **kw: parsed.append(len(text)) or real_parse(text, **kw)
    )
    big = json.dumps({"type": "InjectUserMessage", "content": "x" * 100 * 1024})
    small = json.dumps({"type": "InjectUserMessage", "content": "hello"})
    session, client = new_session([settings(prompt="p" * 100_000), big, big, small], catalog)
    await session._client_to_upstream()
    assert max(parsed) < len(big) and len(parsed) == 2  # Settings (long, before the cap applies) and `small`
    errors = client.messages("Error")
    assert [e["code"] for e in errors] == [ErrorCode.MESSAGE_TOO_LARGE]  # one a second, not one a frame
    assert "65536" in errors[0]["description"]
    await asyncio.sleep(0)
    texts = [json.loads(f) for f in agent_seen_text(session)]
    assert [t["content"] for t in texts if t.get("role") == "user"] == ["hello"]  # only the small one arrived


def agent_seen_text(session: Session) -> list[str]:
    queue = session.upstream._outgoing  # type: ignore[union-attr]
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    return [f for f in items if isinstance(f, str) and '"ConversationText"' in f]


async def test_bytes_beyond_the_byte_rate_are_dropped(catalog: Catalog) -> None:
    audio = [b"\0" * 1000] * 10  # 10 kB at once; the bucket holds 2048 bytes (rate 1024/s)
    session, client = new_session([settings(), *audio], catalog, client_byte_rate=1024, max_frame_bytes=1024)
    await session._client_to_upstream()
    assert 1 <= agent_of(session).stats["audio_frames"] <= 2
    assert [e["code"] for e in client.messages("Error")] == [ErrorCode.RATE_LIMITED]


# --- item 8: no protection gap when the catalog cannot be read ------------------------------------------


async def test_settings_during_a_redis_outage_get_the_last_known_catalog(
    server: fakeredis.FakeServer, catalog: Catalog
) -> None:
    await publish(catalog._redis, WEATHER)
    assert await catalog.functions() == {"get_weather": WEATHER}  # an earlier session read it
    server.connected = False
    session, client = new_session([settings()], catalog)
    await session._client_to_upstream()
    assert client.messages("Warning") == []  # no BACKEND_UNAVAILABLE
    assert agent_of(session).stats["settings"] == ["get_weather"]  # the provider was told about it
    assert session.owned == {"get_weather": WEATHER}


async def test_settings_after_redis_came_back_empty_get_the_last_known_catalog(
    server: fakeredis.FakeServer, catalog: Catalog
) -> None:
    await publish(catalog._redis, WEATHER)
    await catalog.functions()
    await catalog._redis.flushall()  # Redis restarted empty; the workers have not republished yet
    session, client = new_session([settings()], catalog)
    await session._client_to_upstream()
    assert agent_of(session).stats["settings"] == ["get_weather"] and client.messages("Warning") == []


async def test_a_call_to_a_backend_name_the_session_did_not_know_still_runs_on_the_backend(
    catalog: Catalog,
) -> None:
    session, client = new_session([], catalog)
    await publish(catalog._redis, WEATHER)
    await catalog.functions()  # another session saw it; this one started with no backend functions
    request = {
        "type": "FunctionCallRequest",
        "functions": [
            {"id": "c1", "name": "get_weather", "arguments": "{}", "client_side": True},
            {"id": "c2", "name": "open_door", "arguments": "{}", "client_side": True},
        ],
    }
    await session._on_function_message(json.dumps(request))
    await asyncio.gather(*session.calls.values())
    assert session.dispatcher.calls == [("get_weather", WEATHER)]  # type: ignore[attr-defined]
    [forwarded] = client.messages("FunctionCallRequest")
    assert [f["name"] for f in forwarded["functions"]] == ["open_door"]
    answer = {"type": "FunctionCallResponse", "id": "c9", "name": "get_weather", "content": "{}"}
    await session._on_client_function_response(json.dumps(answer), answer)
    assert client.messages("Warning")[-1]["code"] == ErrorCode.FUNCTION_RESPONSE_REFUSED
