"""A session's budgets and refusals, with the real simulated provider and the catalog on fakeredis.

Settings the provider cannot honour are refused before anything reaches it; bytes are rate-limited as well as
frames; a catalog gap never hands a backend name to the client. Each session runs whole (``Session.run``) until
its client has sent its frames. The same rules frame by frame, without I/O: tests/unit/test_conversation.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import fakeredis
import pytest

from gateway.actions import ReadCatalog, StartCall, ToClient
from gateway.catalog import Catalog
from gateway.conversation import Conversation
from gateway.providers.simulated.adapter import SimulatedProvider
from gateway.session import Session
from shared import keys
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec, WorkerCatalog
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
        self.closed = self.closed or (code, reason)  # the first close counts, as on a real connection

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, self.sent) if type_ is None or m["type"] == type_]


class Dispatcher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, FunctionSpec]] = []

    async def call(
        self, call_id: str, name: str, arguments: str, spec: FunctionSpec, session_id: str, principal: str = ""
    ) -> CallResult:
        self.calls.append((name, spec))
        return CallResult(call_id=call_id, ok=True, content='{"ok": true}', worker_id="w1")


def settings(**fields: Any) -> str:
    return json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Test."}}, **fields})


async def publish(redis: fakeredis.FakeAsyncRedis, *specs: FunctionSpec) -> None:
    entry = WorkerCatalog(worker_id="w1", queues=["default"], functions=list(specs), published_at=time.time())
    await redis.set(keys.catalog("w1"), entry.to_json())
    await redis.sadd(keys.CATALOG_INDEX, "w1")


async def run_session(frames: Iterable[str | bytes], catalog: Catalog, **config: Any) -> tuple[Session, Client]:
    """Run a whole session whose client sends ``frames`` and leaves."""
    client = Client(frames)
    provider = SimulatedProvider()

    async def open_provider() -> SimulatedProvider:
        return provider

    session = Session(client, open_provider, Dispatcher(), catalog, Config(**config))  # type: ignore[arg-type]
    await session.run()
    return session, client


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def catalog(server: fakeredis.FakeServer) -> Catalog:
    return Catalog(fakeredis.FakeAsyncRedis(server=server), max_age=0)


def agent_of(session: Session) -> Any:
    return session.provider.agent  # type: ignore[union-attr]


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
    session, client = await run_session([settings(audio=audio), b"\0" * 640], catalog)
    [error] = client.messages("Error")
    assert error["code"] == ErrorCode.INVALID_SETTINGS and problem in error["description"]
    assert client.closed == (1008, ErrorCode.INVALID_SETTINGS)
    assert not agent_of(session).settings_applied and agent_of(session).stats["audio_frames"] == 0


# --- item 9: frame and byte budgets ---------------------------------------------------------------------


async def test_too_many_functions_refuse_the_settings(catalog: Catalog) -> None:
    functions = [{"name": f"f{i}"} for i in range(5)]
    frame = json.dumps({"type": "Settings", "agent": {"think": {"functions": functions}}})
    session, client = await run_session([frame], catalog, max_settings_functions=4)
    [error] = client.messages("Error")
    assert error["code"] == ErrorCode.INVALID_SETTINGS and "at most 4" in error["description"]
    assert not agent_of(session).settings_applied


async def test_bytes_beyond_the_byte_rate_are_dropped(catalog: Catalog) -> None:
    audio = [b"\0" * 1000] * 10  # 10 kB at once; the bucket holds 2048 bytes (rate 1024/s)
    session, client = await run_session([settings(), *audio], catalog, client_byte_rate=1024, max_frame_bytes=1024)
    assert 1 <= agent_of(session).stats["audio_frames"] <= 2
    assert [e["code"] for e in client.messages("Warning")] == [ErrorCode.RATE_LIMITED]


# --- item 8: no protection gap when the catalog cannot be read ------------------------------------------


async def test_settings_during_a_redis_outage_get_the_last_known_catalog(
    server: fakeredis.FakeServer, catalog: Catalog
) -> None:
    await publish(catalog._redis, WEATHER)
    assert await catalog.functions() == {"get_weather": WEATHER}  # an earlier session read it
    server.connected = False
    session, client = await run_session([settings()], catalog)
    assert client.messages("Warning") == []  # no BACKEND_UNAVAILABLE
    assert agent_of(session).stats["settings"] == ["get_weather"]  # the provider was told about it
    assert session.conversation.owned == {"get_weather": WEATHER}


async def test_settings_after_redis_came_back_empty_get_the_last_known_catalog(
    server: fakeredis.FakeServer, catalog: Catalog
) -> None:
    await publish(catalog._redis, WEATHER)
    await catalog.functions()
    await catalog._redis.flushall()  # Redis restarted empty; the workers have not republished yet
    session, client = await run_session([settings()], catalog)
    assert agent_of(session).stats["settings"] == ["get_weather"] and client.messages("Warning") == []


async def test_a_call_to_a_backend_name_the_session_did_not_know_still_runs_on_the_backend(
    catalog: Catalog,
) -> None:
    conversation = Conversation(Config(), catalog.ever_owned, now=0.0)
    conversation.provider_opened(lambda settings: None)
    assert conversation.client_frame(settings(), 0.0) == (ReadCatalog(),)
    conversation.catalog_read({}, 0.0)  # this session started with no backend functions
    await publish(catalog._redis, WEATHER)
    await catalog.functions()  # another session saw it
    request = {
        "type": "FunctionCallRequest",
        "functions": [
            {"id": "c1", "name": "get_weather", "arguments": "{}", "client_side": True},
            {"id": "c2", "name": "open_door", "arguments": "{}", "client_side": True},
        ],
    }
    actions = conversation.provider_frame(json.dumps(request), lambda: 1.0)
    assert [(a.call.name, a.spec) for a in actions if isinstance(a, StartCall)] == [("get_weather", WEATHER)]
    [forwarded] = [json.loads(a.frame) for a in actions if isinstance(a, ToClient)]
    assert [f["name"] for f in forwarded["functions"]] == ["open_door"]
    answer = {"type": "FunctionCallResponse", "id": "c9", "name": "get_weather", "content": "{}"}
    [refusal] = conversation.client_frame(json.dumps(answer), 1.0)
    assert isinstance(refusal, ToClient) and json.loads(refusal.frame)["code"] == ErrorCode.FUNCTION_RESPONSE_REFUSED
