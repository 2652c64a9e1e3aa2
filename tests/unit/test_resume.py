"""Live re-attach without a network: the kept messages' bounds and order, the link that follows the client, the
Settings comparison, the handshake's id and ownership decisions (fakeredis), and a session parked and resumed
with a fake client and provider."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis.exceptions
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from gateway import conversation_ids
from gateway.handshake import NOT_OWNER, UNCHECKED, ConversationGate
from gateway.resume import ClientLink, KeptMessages, Resumable, hung_up, resumed_settings, settings_changes
from gateway.session import Session
from shared.config import Config
from tests.support.fakes import CALL_REQUEST, FakeCatalog, FakeDispatcher, FakeProvider

SETTINGS = json.dumps({"type": "Settings", "audio": {"input": {"encoding": "linear16"}}, "agent": {"think": {}}})


# --- kept messages ---------------------------------------------------------------------------------------


def test_kept_messages_are_delivered_in_order_without_audio() -> None:
    kept = KeptMessages()
    for frame in ["a", b"\0\0", "b", "c"]:
        kept.keep(frame)
    assert list(kept.delivery()) == ["a", "b", "c"]
    assert list(kept.delivery()) == []


def test_past_the_count_bound_the_oldest_go_and_a_warning_says_so() -> None:
    kept = KeptMessages(max_messages=3)
    for i in range(5):
        kept.keep(f"m{i}")
    warning, *rest = kept.delivery()
    assert json.loads(warning)["code"] == "MESSAGES_DROPPED" and "2 message" in json.loads(warning)["description"]
    assert rest == ["m2", "m3", "m4"]


def test_past_the_byte_bound_the_oldest_go() -> None:
    kept = KeptMessages(max_bytes=10)
    for frame in ["aaaa", "bbbb", "cccc"]:
        kept.keep(frame)
    assert list(kept.delivery())[1:] == ["bbbb", "cccc"]


class FakeWs:
    """A client connection that records what it is sent, and can be closed."""

    def __init__(self, incoming: list[str] | None = None) -> None:
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        for frame in incoming or []:
            self.incoming.put_nowait(frame)

    async def send(self, frame: Any) -> None:
        if self.closed:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        self.sent.append(frame)

    async def recv(self) -> Any:
        frame = await self.incoming.get()
        if frame is None:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self.incoming.put_nowait(None)

    async def __aiter__(self) -> Any:
        while (frame := await self.incoming.get()) is not None:
            yield frame


async def test_the_link_keeps_what_a_closed_client_misses_and_delivers_it_first() -> None:
    old, new = FakeWs(), FakeWs()
    link = ClientLink(old, resumable=True)
    await link.send("1")
    await old.close()
    await link.send("2")  # the client is gone: kept, no exception
    link.park()
    await link.send("3")
    assert await link.attach(new)
    await link.send("4")
    assert old.sent == ["1"] and new.sent == ["2", "3", "4"]


async def test_without_a_window_the_link_is_the_connection() -> None:
    ws = FakeWs()
    link = ClientLink(ws, resumable=False)
    await ws.close()
    with pytest.raises(ConnectionClosedOK):
        await link.send("x")


# --- Settings on resume -------------------------------------------------------------------------------------


def test_same_settings_resume_without_a_warning() -> None:
    again = json.dumps({**json.loads(SETTINGS), "tags": ["x"]})  # fields that shape nothing live are not compared
    assert settings_changes(SETTINGS, again) == []
    replies, accepted = resumed_settings(again, SETTINGS)
    assert accepted and [json.loads(r)["type"] for r in replies] == ["SettingsApplied"]


def test_a_new_history_is_not_a_change() -> None:
    again = json.loads(SETTINGS)
    again["agent"]["context"] = {"messages": [{"type": "History", "role": "user", "content": "hi"}]}
    assert settings_changes(SETTINGS, json.dumps(again)) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"audio": {"input": {"encoding": "mulaw"}}}, "audio"),
        ({"agent": {"think": {"prompt": "be brief"}}}, "agent"),
        ({"agent": {"think": {"functions": [{"name": "f"}]}}}, "agent"),
    ],
)
def test_what_the_live_session_cannot_change_gets_a_warning(change: dict[str, Any], field: str) -> None:
    again = json.dumps({**json.loads(SETTINGS), **change})
    assert settings_changes(SETTINGS, again) == [field]
    replies, accepted = resumed_settings(again, SETTINGS)
    assert accepted
    assert [json.loads(r).get("code") for r in replies] == [None, "SETTINGS_NOT_APPLIED"]


@pytest.mark.parametrize("first", [b"\0", '{"type": "KeepAlive"}', "nope", '{"type": "Settings", "agent": 3}'])
def test_anything_but_valid_settings_first_is_refused(first: Any) -> None:
    replies, accepted = resumed_settings(first, SETTINGS)
    assert not accepted and json.loads(replies[0])["type"] == "Error"


# --- the handshake ------------------------------------------------------------------------------------------


class Live:
    def __init__(self, principal: str) -> None:
        self.principal = principal

    async def attach(self, ws: Any) -> bool:
        return True


def gate(client: Any, resumable: Resumable | None = None) -> ConversationGate:
    return ConversationGate(Config(), client, resumable or Resumable(15))


async def test_without_a_requested_id_the_gateway_makes_one() -> None:
    conversation_id, refusal = await gate(fakeredis.FakeAsyncRedis()).admit("/v1/agent/converse", "")
    assert refusal is None and conversation_ids.ID_PATTERN.match(conversation_id)


async def test_a_malformed_id_raises_for_a_400() -> None:
    with pytest.raises(conversation_ids.BadConversationId):
        await gate(fakeredis.FakeAsyncRedis()).admit("/?conversation=a.b", "alice")


async def test_ownership_is_checked_only_with_credentials() -> None:
    client = fakeredis.FakeAsyncRedis()
    assert await gate(client).admit("/?conversation=c1", "alice") == ("c1", None)
    assert await gate(client).admit("/?conversation=c1", "bob") == ("c1", NOT_OWNER)
    assert NOT_OWNER.status == HTTPStatus.FORBIDDEN
    assert await gate(client).admit("/?conversation=c2", "") == ("c2", None)
    assert await client.get("fcg:conv:c2:owner") is None  # nothing claimed for the anonymous caller


async def test_a_live_session_of_another_caller_is_refused() -> None:
    resumable = Resumable(15)
    resumable.add("c1", Live("alice"))  # type: ignore[arg-type]
    assert await gate(fakeredis.FakeAsyncRedis(), resumable).admit("/?conversation=c1", "bob") == ("c1", NOT_OWNER)


class DownRedis:
    async def eval(self, *args: Any) -> Any:
        raise redis.exceptions.ConnectionError("down")


async def test_redis_down_refuses_a_requested_id_but_not_a_new_one() -> None:
    assert await gate(DownRedis()).admit("/?conversation=c1", "alice") == ("c1", UNCHECKED)
    assert UNCHECKED.status == HTTPStatus.SERVICE_UNAVAILABLE
    _, refusal = await gate(DownRedis()).admit("/", "alice")
    assert refusal is None


# --- a session parked and resumed ---------------------------------------------------------------------------


class Provider(FakeProvider):
    """Requests one backend call after Settings; says "done" once it is answered."""

    def __init__(self) -> None:
        super().__init__('{"type":"Welcome"}')

    async def send(self, frame: Any) -> None:
        await super().send(frame)
        if '"Settings"' in str(frame):
            self.out.put_nowait('{"type":"SettingsApplied"}')
            self.out.put_nowait(CALL_REQUEST)
        if '"FunctionCallResponse"' in str(frame):
            self.out.put_nowait('{"type":"ConversationText","role":"assistant","content":"done"}')


async def wait_for(predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


def types(frames: list[Any]) -> list[str]:
    return [json.loads(f)["type"] for f in frames if isinstance(f, str)]


class Running:
    """A session over fakes, run until its first client is inside a backend call."""

    def __init__(self, grace: float, config: Config | None = None) -> None:
        self.provider, self.dispatcher, self.resumable = Provider(), FakeDispatcher(held=True), Resumable(grace)
        self.first = FakeWs([SETTINGS])
        self.session = Session(
            self.first, self.open_provider, self.dispatcher, FakeCatalog(), config or Config(), "", "c1", self.resumable
        )  # type: ignore[arg-type]

    async def open_provider(self) -> Provider:
        return self.provider

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.session.run())
        await wait_for(lambda: "BackendFunctionCall" in types(self.first.sent))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_call_finished_while_parked_is_answered_and_its_notices_replayed() -> None:
    async with Running(30) as run:
        provider, first, session = run.provider, run.first, run.session
        assert types(first.sent)[:2] == ["Conversation", "Welcome"]
        await first.close()  # the client drops mid-call
        await wait_for(lambda: run.resumable.parked_count == 1)
        run.dispatcher.release.set()
        await wait_for(lambda: any('"FunctionCallResponse"' in str(f) for f in provider.frames))
        await wait_for(lambda: len(session.client.kept) >= 2)

        second = FakeWs([SETTINGS])
        assert await session.attach(second)
        await wait_for(lambda: "ConversationText" in types(second.sent))
        assert types(second.sent) == ["Conversation", "SettingsApplied", "BackendFunctionCall", "ConversationText"]
        assert json.loads(second.sent[0])["resumed"] is True
        assert json.loads(second.sent[2])["status"] == "finished"
        assert sum('"Settings"' in str(f) for f in provider.frames) == 1  # the resumed Settings went nowhere
        assert sum('"FunctionCallResponse"' in str(f) for f in provider.frames) == 1


async def test_a_parked_session_keeps_the_provider_alive_and_survives_a_bad_resume() -> None:
    async with Running(30, Config(keepalive_interval=0.05)) as run:
        provider, session = run.provider, run.session
        await run.first.close()
        await wait_for(lambda: run.resumable.parked_count == 1)
        keepalives = sum('"KeepAlive"' in str(f) for f in provider.frames)
        await wait_for(lambda: sum('"KeepAlive"' in str(f) for f in provider.frames) > keepalives + 2)
        request = {"type": "FunctionCallRequest", "functions": [{"id": "k1", "name": "mine"}]}
        provider.out.put_nowait(json.dumps(request))

        rude = FakeWs(['{"type": "KeepAlive"}'])
        assert await session.attach(rude)
        await wait_for(lambda: rude.closed is not None)
        assert rude.closed == (1008, "first message") and types(rude.sent) == ["Conversation", "Error"]
        assert run.resumable.parked_count == 1  # still waiting for its client

        polite = FakeWs([SETTINGS])
        assert await session.attach(polite)
        await wait_for(lambda: "FunctionCallRequest" in types(polite.sent))  # the client's own call, kept for it


async def test_a_session_without_a_window_ends_when_its_client_drops() -> None:
    async with Running(0) as run:
        await run.first.close()
        await asyncio.wait_for(run.task, 2)
        assert run.resumable.parked_count == 0 and not run.session.calls  # the pending call was cancelled


async def test_a_bad_resume_does_not_restart_the_window() -> None:
    async with Running(0.6) as run:
        await run.first.close()
        await wait_for(lambda: run.resumable.parked_count == 1)
        loop = asyncio.get_running_loop()
        dropped, silent = loop.time(), []
        while not run.task.done():  # reconnect in a loop, never sending Settings
            ws = FakeWs(['{"type": "KeepAlive"}'] if len(silent) % 2 else [])
            silent.append(ws)
            if not await run.session.attach(ws):
                break
            await asyncio.sleep(0.2)
            assert loop.time() - dropped < 3, "the failed resumes kept the session alive"
        await asyncio.wait_for(run.task, 2)
        assert run.resumable.parked_count == 0 and len(silent) >= 2


class HungUp(FakeWs):
    """A client that sent a close frame with ``code`` (the gateway answered it)."""

    def __init__(self, code: int) -> None:
        super().__init__([SETTINGS])
        close = Close(code, "")
        self.protocol = SimpleNamespace(close_rcvd=close, close_sent=close, close_rcvd_then_sent=True)


@pytest.mark.parametrize(("code", "parked"), [(1000, False), (1001, True)])
def test_a_normal_close_is_a_hang_up_and_a_going_away_a_drop(code: int, parked: bool) -> None:
    assert hung_up(HungUp(code)) is not parked
    assert not hung_up(FakeWs())  # no close frame received: lost connection


async def test_a_client_that_hangs_up_ends_its_session() -> None:
    resumable = Resumable(30)
    first = HungUp(1000)
    provider = Provider()

    async def open_provider() -> Provider:
        return provider

    session = Session(first, open_provider, FakeDispatcher(held=True), FakeCatalog(), Config(), "", "c1", resumable)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run())
    await wait_for(lambda: "BackendFunctionCall" in types(first.sent))
    await first.close()
    await asyncio.wait_for(task, 2)  # no window: the session ended at once
    assert resumable.parked_count == 0 and not session.calls
