"""Conversation memory: entries, the bounded Redis list, the session's writer (fakeredis), History injection, and
what the conversation core remembers."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
import redis

from gateway.actions import Forward, ReadCatalog, Remember, ToProvider
from gateway.conversation import Conversation
from gateway.history import HISTORY_BYTES, history_messages, inject_history, with_history
from gateway.memory import TEXT_BYTES, MemoryStore, SessionMemory, call_entry, session_memory, turn_entry
from shared import keys
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec

WEATHER = FunctionSpec(name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}})
SETTINGS: dict[str, Any] = {"type": "Settings", "agent": {"think": {"prompt": "Test."}}}
TURN = {"kind": "turn", "role": "user", "content": "Weather in Paris?"}
CALL = {"kind": "call", "id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}',
        "result": '{"temp": 21}', "client_side": False}  # fmt: skip


def store(**config: Any) -> MemoryStore:
    return MemoryStore(fakeredis.FakeAsyncRedis(), Config(**config))


# --- entries --------------------------------------------------------------------------------------------------


def test_entries_carry_turns_and_calls_with_their_results_or_errors() -> None:
    assert turn_entry("user", "Weather in Paris?") == TURN
    result = CallResult(call_id="k", ok=True, content='{"temp": 21}')
    assert call_entry("c1", "get_weather", '{"city":"Paris"}', result) == CALL
    failed = CallResult.failure("k", "get_weather failed: no city.")
    assert call_entry("c1", "get_weather", "{}", failed)["error"] == "get_weather failed: no city."


def test_long_text_is_cut_and_marked_truncated() -> None:
    entry = turn_entry("assistant", "é" * TEXT_BYTES)
    assert entry["truncated"] is True and len(entry["content"].encode()) <= TEXT_BYTES
    big = CallResult(call_id="k", ok=True, content="x" * 100_000)
    entry = call_entry("c1", "f", "y" * 100_000, big)
    assert entry["truncated"] is True
    assert len(json.dumps(entry)) <= 8 * 1024
    assert "truncated" not in turn_entry("user", "short")


# --- the Redis list -------------------------------------------------------------------------------------------


async def test_the_list_keeps_the_newest_entries_and_expires() -> None:
    memory = store(conversation_max_entries=3, conversation_ttl=60)
    for n in range(5):
        await memory.append("c", [turn_entry("user", str(n))])
    assert [e["content"] for e in await memory.entries("c")] == ["2", "3", "4"]
    assert 0 < await memory.client.ttl(keys.conversation_memory("c")) <= 60


async def test_each_write_renews_the_writers_ownership_with_the_memory() -> None:
    memory = store(conversation_ttl=60)
    owner = keys.conversation_owner("c")
    assert await memory.append("c", [TURN], "alice")
    assert await memory.client.get(owner) == b"alice" and 0 < await memory.client.ttl(owner) <= 60
    await memory.client.delete(owner)  # expired (renewed only at handshakes before) or erased by DELETE
    session = SessionMemory(memory, "c", "s1", "alice")
    session.record(TURN)
    await session.close()
    assert await memory.client.get(owner) == b"alice" and 0 < await memory.client.ttl(owner) <= 60
    assert await memory.append("c", [TURN])  # no credentials: the owner key is left alone
    assert await memory.client.get(owner) == b"alice"


async def test_a_write_to_a_conversation_another_caller_owns_now_is_dropped() -> None:
    memory = store()
    await memory.client.set(keys.conversation_owner("c"), "bob")  # erased, then claimed by bob
    session = SessionMemory(memory, "c", "s1", "alice")
    session.record(TURN)
    await session.close()
    assert await memory.entries("c") == [] and session.dropped == 1
    assert await memory.client.get(keys.conversation_owner("c")) == b"bob"


async def test_erase_forgets_memory_and_ownership() -> None:
    memory = store()
    await memory.append("c", [TURN])
    await memory.client.set(keys.conversation_owner("c"), "alice")
    await memory.erase("c")
    assert await memory.entries("c") == []
    assert await memory.client.exists(keys.conversation_owner("c")) == 0


async def test_memory_off_stores_nothing_and_reads_nothing() -> None:
    memory = store(conversation_memory=False)
    assert session_memory(memory, "c", "s1") is None
    assert await memory.entries("c") == []
    assert session_memory(store(), "", "s1") is None  # no conversation id: nothing to remember into


async def test_a_session_writes_in_order_and_flushes_on_close() -> None:
    memory = store()
    session = SessionMemory(memory, "c", "s1")
    for n in range(10):
        session.record(turn_entry("user", str(n)))
    await session.close()
    assert [e["content"] for e in await memory.entries("c")] == [str(n) for n in range(10)]
    assert session.dropped == 0


class BrokenRedis(fakeredis.FakeAsyncRedis):
    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("down")

    async def eval(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("down")

    async def lrange(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("down")


async def test_a_redis_failure_is_counted_never_raised() -> None:
    memory = MemoryStore(BrokenRedis(), Config())
    session = SessionMemory(memory, "c", "s1")
    assert await session.history() == []
    session.record(TURN)
    await session.close()
    assert session.dropped == 1 and memory.failures == 2


# --- History injection ----------------------------------------------------------------------------------------


def test_memory_becomes_history_context_with_the_call_and_its_result() -> None:
    failed = {**CALL, "id": "c2", "error": "no city"}
    del failed["result"]
    out = with_history(SETTINGS, [TURN, CALL, failed, {"kind": "unknown"}])
    assert out["agent"]["think"] == SETTINGS["agent"]["think"]
    assert out["agent"]["context"]["messages"] == [
        {"type": "History", "role": "user", "content": "Weather in Paris?"},
        {"type": "History", "function_calls": [{"id": "c1", "name": "get_weather", "client_side": False,
                                                "arguments": '{"city":"Paris"}', "response": '{"temp": 21}'}]},
        {"type": "History", "function_calls": [{"id": "c2", "name": "get_weather", "client_side": False,
                                                "arguments": '{"city":"Paris"}', "response": '{"error": "no city"}'}]},
    ]  # fmt: skip
    assert "context" not in SETTINGS["agent"]  # the input is not modified


@pytest.mark.parametrize("context", [{"messages": [{"type": "History", "role": "user", "content": "Mine"}]}, {}])
def test_the_clients_own_context_is_kept(context: dict[str, Any]) -> None:
    settings = {**SETTINGS, "agent": {**SETTINGS["agent"], "context": context}}
    assert with_history(settings, [TURN]) is settings
    stored_agent = {"type": "Settings", "agent": "6f0c0c3e-0000-4000-8000-000000000000"}
    assert with_history(stored_agent, [TURN]) is stored_agent
    assert with_history(SETTINGS, []) is SETTINGS


def test_history_is_bounded_to_the_newest_entries() -> None:
    entries = [turn_entry("user", f"{n} " + "x" * 7000) for n in range(100)]
    messages = history_messages(entries)
    assert len(json.dumps(messages)) <= HISTORY_BYTES
    assert 0 < len(messages) < 100 and messages[-1]["content"].startswith("99 ")


def test_inject_history_leaves_an_unchanged_frame_byte_for_byte() -> None:
    frame = json.dumps({**SETTINGS, "agent": {**SETTINGS["agent"], "context": {"messages": []}}})
    assert inject_history(frame, [TURN]) is frame


# --- what the conversation core remembers ---------------------------------------------------------------------


def remembering(history: list[dict[str, Any]]) -> tuple[Conversation, dict[str, Any]]:
    """A conversation that keeps memory, holding ``history``; and the Settings it sent upstream."""
    conversation = Conversation(Config(), {}, now=0.0, session_id="s1")
    conversation.provider_opened(lambda settings: None)
    assert conversation.client_frame(json.dumps(SETTINGS), 0.0) == (ReadCatalog(),)
    conversation.remember(history)
    [upstream] = [a for a in conversation.catalog_read({"get_weather": WEATHER}, 0.0) if isinstance(a, ToProvider)]
    return conversation, json.loads(upstream.frame)


def test_a_new_provider_session_starts_with_the_memory() -> None:
    _, settings = remembering([TURN, CALL])
    assert [m.get("role") or m["function_calls"][0]["name"] for m in settings["agent"]["context"]["messages"]] == [
        "user", "get_weather"
    ]  # fmt: skip
    assert settings["agent"]["think"]["functions"][0]["name"] == "get_weather"


def test_turns_and_answered_calls_are_remembered_but_not_history() -> None:
    conversation, _ = remembering([])
    frame = json.dumps({"type": "ConversationText", "role": "assistant", "content": "Hi"})
    assert conversation.provider_frame(frame, lambda: 1.0) == (Forward(), Remember(turn_entry("assistant", "Hi")))
    history = json.dumps({"type": "History", "role": "assistant", "content": "Hi"})
    assert not any(isinstance(a, Remember) for a in conversation.provider_frame(history, lambda: 1.0))
    asked = {"id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}', "client_side": True}
    request = {"type": "FunctionCallRequest", "functions": [asked]}
    conversation.provider_frame(json.dumps(request), lambda: 1.0)
    actions = conversation.call_finished("c1", CallResult(call_id="s1-c1", ok=True, content='{"temp": 21}'), 2.0)
    assert actions[-1] == Remember(CALL)


def test_a_session_without_memory_remembers_nothing() -> None:
    conversation = Conversation(Config(), {}, now=0.0, session_id="s1")
    frame = json.dumps({"type": "ConversationText", "role": "user", "content": "Hi"})
    assert conversation.provider_frame(frame, lambda: 1.0) == (Forward(),)


def test_calls_the_client_answers_are_not_remembered() -> None:
    conversation, _ = remembering([])
    asked = {"id": "k1", "name": "client_fn", "arguments": "{}", "client_side": True}
    conversation.provider_frame(json.dumps({"type": "FunctionCallRequest", "functions": [asked]}), lambda: 1.0)
    answer = json.dumps({"type": "FunctionCallResponse", "id": "k1", "name": "client_fn", "content": "done"})
    assert not any(isinstance(a, Remember) for a in conversation.client_frame(answer, 1.0))


def test_the_memory_and_owner_keys() -> None:
    assert keys.conversation_memory("abc") == "vfg:conv:abc:memory"
    assert keys.conversation_owner("abc") == "vfg:conv:abc:owner"


def test_a_lone_surrogate_is_stored_as_a_replacement() -> None:
    """JSON may carry "\\ud800", which UTF-8 cannot encode: the entry keeps a "?" instead of failing the session."""
    assert turn_entry("user", "a\ud800b") == {"kind": "turn", "role": "user", "content": "a?b"}
    result = CallResult(call_id="c", ok=True, content='"\ud800"')
    assert call_entry("c", "f", '{"x": "\udfff"}', result)["arguments"] == '{"x": "?"}'
