"""The conversation core, event by event: frames and times in, actions out. No sockets, no asyncio, no sleeps.

Written like ``websockets``' protocol tests: each test feeds a :class:`Conversation` what the client, the provider,
the workers or the clock did, and checks what the core asks the session loop to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from gateway import conversation as conversation_module
from gateway.actions import (
    FORWARD,
    NOTHING,
    Actions,
    Answer,
    CancelCalls,
    Close,
    Notify,
    ReadCatalog,
    StartCall,
    ToClient,
    ToProvider,
    UseFunctions,
)
from gateway.conversation import KEEPALIVE, Conversation
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from shared.protocol import ErrorCode

WEATHER = FunctionSpec(name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}})
TIME = FunctionSpec(name="get_time", description="Time.", parameters={"type": "object", "properties": {}})
BACKEND = {"get_weather": WEATHER}
SETTINGS = json.dumps({"type": "Settings", "agent": {"think": {"prompt": "Test."}}})
AUDIO = b"\0" * 640


def new(ever_owned: Mapping[str, FunctionSpec] | None = None, audio_problem: Any = None, **config: Any) -> Conversation:
    """A conversation whose provider is open, before Settings."""
    conversation = Conversation(Config(**config), {} if ever_owned is None else ever_owned, now=0.0, session_id="s1")
    conversation.provider_opened(audio_problem or (lambda settings: None))
    return conversation


def applied(owned: Mapping[str, FunctionSpec] = BACKEND, **config: Any) -> Conversation:
    """A conversation whose Settings went upstream with ``owned`` as its backend functions."""
    conversation = new(**config)
    assert conversation.client_frame(SETTINGS, 0.0) == (ReadCatalog(),)
    conversation.catalog_read(owned, 0.0)
    return conversation


def at(now: float) -> Callable[[], float]:
    """The clock a provider frame comes with: read only if the frame is acted on."""
    return lambda: now


def text(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def request(*calls: dict[str, Any]) -> str:
    return text("FunctionCallRequest", functions=list(calls))


def call(call_id: str, name: str = "get_weather", **fields: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": "{}", "client_side": True, **fields}


def sent(actions: Actions, kind: type = ToClient) -> list[dict[str, Any]]:
    """The messages of the actions of one kind (ToClient, Notify, ToProvider, Answer), parsed."""
    return [json.loads(a.frame) for a in actions if isinstance(a, kind)]


def codes(actions: Actions) -> list[str]:
    return [m["code"] for m in sent(actions)]


def closed(actions: Actions) -> tuple[int, str, str]:
    [close] = actions
    assert isinstance(close, Close) and close.error is not None
    return close.code, close.reason, json.loads(close.error)["code"]


def ok(call_id: str) -> CallResult:
    return CallResult(call_id=call_id, ok=True, content='{"ok": true}', worker_id="w1")


# --- Settings first, and once ---------------------------------------------------------------------------


@pytest.mark.parametrize("first", [AUDIO, "not json", text("KeepAlive"), text("InjectUserMessage", content="hi")])
def test_the_first_frame_must_be_settings(first: str | bytes) -> None:
    conversation = new()
    code = ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS
    assert closed(conversation.client_frame(first, 0.0)) == (1008, code, code)
    assert conversation.closed


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (text("Settings", agent=[]), "agent"),
        (text("Settings", audio={"input": {"sample_rate": 0}}), "greater than or equal to 1"),
        (text("Settings", agent={"think": {"functions": [{"name": f"f{i}"} for i in range(5)]}}), "at most 4"),
        (text("Settings", audio={"output": {"encoding": "mulaw"}}), "the provider says no"),
    ],
)
def test_invalid_settings_close_the_session(settings: str, problem: str) -> None:
    refuse_mulaw = lambda settings: settings.audio and settings.audio.output and "the provider says no"  # noqa: E731
    conversation = new(audio_problem=refuse_mulaw, max_settings_functions=4)
    [close] = conversation.client_frame(settings, 0.0)
    assert isinstance(close, Close) and (close.code, close.reason) == (1008, ErrorCode.INVALID_SETTINGS)
    assert problem in json.loads(close.error or "")["description"]


def test_settings_wait_for_the_catalog_then_go_upstream_with_the_backend_functions() -> None:
    conversation = new()
    assert conversation.client_frame(SETTINGS, 0.0) == (ReadCatalog(),)
    use, settings = conversation.catalog_read(BACKEND, 0.0)
    assert use == UseFunctions(BACKEND) and isinstance(settings, ToProvider)
    functions = json.loads(settings.frame)["agent"]["think"]["functions"]
    assert [f["name"] for f in functions] == ["get_weather"] and conversation.owned == BACKEND
    assert conversation.client_frame(AUDIO, 0.1) is FORWARD


def test_settings_without_backend_functions_go_upstream_as_received() -> None:
    conversation = new()
    conversation.client_frame(SETTINGS, 0.0)
    assert conversation.catalog_read({}, 0.0) == [UseFunctions({}), ToProvider(SETTINGS)]


def test_an_unreadable_catalog_warns_the_client_and_the_session_goes_on() -> None:
    conversation = new()
    conversation.client_frame(SETTINGS, 0.0)
    actions = conversation.catalog_read(None, 0.0)
    assert codes(actions) == [ErrorCode.BACKEND_UNAVAILABLE]
    assert actions[1:] == [UseFunctions({}), ToProvider(SETTINGS)]


def test_a_second_settings_is_refused() -> None:
    conversation = applied()
    assert codes(conversation.client_frame(SETTINGS, 1.0)) == [ErrorCode.SETTINGS_ALREADY_APPLIED]


def test_a_bad_text_frame_after_settings_gets_a_warning_and_the_session_goes_on() -> None:
    """A Deepgram Error is session-ending for its clients: a refusal the session survives is a Warning."""
    conversation = applied()
    assert [(m["type"], m["code"]) for m in sent(conversation.client_frame("{not json", 1.0))] == [
        ("Warning", ErrorCode.INVALID_MESSAGE)
    ]
    assert codes(conversation.client_frame('{"type": "X", "type": "Y"}', 1.0)) == [ErrorCode.INVALID_MESSAGE]
    assert not conversation.closed and conversation.client_frame(text("KeepAlive"), 1.0) is FORWARD


# --- UpdateThink --------------------------------------------------------------------------------------------


def test_update_think_gets_the_backend_functions_merged_in() -> None:
    conversation = applied(ever_owned={"get_time": TIME})
    evil = {"name": "get_weather", "endpoint": {"url": "https://evil.example"}}
    [update] = conversation.client_frame(text("UpdateThink", think={"functions": [evil]}), 1.0)
    assert isinstance(update, ToProvider)
    functions = json.loads(update.frame)["think"]["functions"]
    assert [f["name"] for f in functions] == ["get_weather", "get_time"] and "endpoint" not in functions[0]


def test_update_think_without_backend_functions_is_relayed_as_received() -> None:
    assert applied({}).client_frame(text("UpdateThink", think={"functions": []}), 1.0) is FORWARD


@pytest.mark.parametrize("think", [{"functions": [{"name": f"f{i}"} for i in range(5)]}, "prompt"])
def test_an_invalid_update_think_gets_an_error(think: Any) -> None:
    conversation = applied(max_settings_functions=4)
    assert codes(conversation.client_frame(text("UpdateThink", think=think), 1.0)) == [ErrorCode.INVALID_MESSAGE]


# --- forged client messages ---------------------------------------------------------------------------------


def test_the_client_may_not_request_a_call() -> None:
    actions = applied().client_frame(request(call("c1")), 1.0)
    assert codes(actions) == [ErrorCode.FUNCTION_REQUEST_REFUSED]


def test_the_client_may_not_answer_a_backend_call_by_name_or_by_id() -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c1")), at(1.0))
    by_name = text("FunctionCallResponse", id="c9", name="get_weather", content="{}")
    by_id = text("FunctionCallResponse", id="c1", name="open_door", content="{}")
    for answer in (by_name, by_id):
        assert codes(conversation.client_frame(answer, 1.0)) == [ErrorCode.FUNCTION_RESPONSE_REFUSED]
    own = text("FunctionCallResponse", id="c2", name="open_door", content="{}")
    assert conversation.client_frame(own, 1.0) is FORWARD
    assert codes(conversation.client_frame(text("FunctionCallResponse", id="c3"), 1.0)) == [ErrorCode.INVALID_MESSAGE]


def test_a_backend_name_the_session_did_not_start_with_is_still_the_backends() -> None:
    """A session that started during a catalog gap: the name another session saw a worker own still counts."""
    ever_owned: dict[str, FunctionSpec] = {}
    conversation = applied({}, ever_owned=ever_owned)
    ever_owned["get_weather"] = WEATHER  # learned later, by the process
    actions = conversation.provider_frame(request(call("c1"), call("c2", "open_door")), at(1.0))
    [start] = [a for a in actions if isinstance(a, StartCall)]
    assert start.spec == WEATHER and [f["name"] for f in sent(actions)[0]["functions"]] == ["open_door"]


# --- limits -------------------------------------------------------------------------------------------------


def test_frames_beyond_the_message_rate_are_dropped_with_one_warning_a_second() -> None:
    conversation = applied(client_message_rate=10)  # bursts of 20; Settings took one token
    results = [conversation.client_frame(AUDIO, 0.0) for _ in range(25)]
    assert results[:19] == [FORWARD] * 19
    assert sent(results[19])[0]["type"] == "Warning"  # the session goes on
    assert [codes(r) for r in results[19:]] == [[ErrorCode.RATE_LIMITED], [], [], [], [], []]
    later = [conversation.client_frame(AUDIO, 0.5) for _ in range(6)]  # 5 tokens back; the same second
    assert later == [FORWARD] * 5 + [NOTHING]
    again = [conversation.client_frame(AUDIO, 1.0) for _ in range(6)]  # a second after the Warning
    assert again[:5] == [FORWARD] * 5 and codes(again[5]) == [ErrorCode.RATE_LIMITED]


def test_bytes_beyond_the_byte_rate_are_dropped() -> None:
    conversation = applied(client_byte_rate=1024, max_frame_bytes=1024)  # a burst of 2048 bytes
    results = [conversation.client_frame(b"\0" * 1000, 1.0) for _ in range(10)]
    assert 1 <= results.count(FORWARD) <= 2
    assert [code for r in results for code in codes(r)] == [ErrorCode.RATE_LIMITED]


def test_a_big_text_frame_after_settings_is_dropped_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real_parse = conversation_module.parse_json_object
    monkeypatch.setattr(
        conversation_module, "parse_json_object", lambda text, **kw: parsed.append(len(text)) or real_parse(text, **kw)
    )
    big = text("InjectUserMessage", content="x" * 100 * 1024)
    small = text("InjectUserMessage", content="hello")
    conversation = new()
    conversation.client_frame(text("Settings", agent={"think": {"prompt": "p" * 100_000}}), 0.0)
    conversation.catalog_read({}, 0.0)
    results = [conversation.client_frame(frame, 0.5) for frame in (big, big, small)]
    assert max(parsed) < len(big) and len(parsed) == 2  # Settings (long, before the cap applies) and `small`
    errors = [message for r in results for message in sent(r)]
    assert [e["code"] for e in errors] == [ErrorCode.MESSAGE_TOO_LARGE]  # one a second, not one a frame
    assert "65536" in errors[0]["description"]
    assert results[2] is FORWARD  # only the small one goes on


def test_calls_beyond_the_pending_limit_are_answered_with_an_error_at_once() -> None:
    conversation = applied(max_pending_calls=1)
    first = conversation.provider_frame(request(call("c1"), call("c2")), at(1.0))
    assert [a.call.id for a in first if isinstance(a, StartCall)] == ["c1"]
    [answer] = sent(first, Answer)
    assert answer["id"] == "c2" and "too many calls are pending" in answer["content"]
    notices = sent(first, Notify)
    assert [n.get("status") or n["code"] for n in notices] == [
        "started", "started", ErrorCode.TOO_MANY_PENDING_CALLS, "finished"
    ]  # fmt: skip
    assert notices[-1]["ok"] is False and not notices[-1]["worker"]


# --- backend calls, notices and cancellation --------------------------------------------------------------


def test_a_backend_call_is_run_and_answered_once() -> None:
    conversation = applied()
    actions = conversation.provider_frame(request(call("c1", arguments='{"city": "Paris"}')), at(1.0))
    started, start = actions
    assert isinstance(start, StartCall) and (start.call.id, start.key, start.spec) == ("c1", "s1-c1", WEATHER)
    assert sent([started], Notify) == [
        {"type": "BackendFunctionCall", "id": "c1", "name": "get_weather", "status": "started",
         "arguments": '{"city": "Paris"}'}
    ]  # fmt: skip
    finished, answer = conversation.call_finished("c1", ok("s1-c1"), 1.25)
    assert sent([finished], Notify) == [
        {"type": "BackendFunctionCall", "id": "c1", "name": "get_weather", "status": "finished", "ok": True,
         "worker": "w1", "duration_ms": 250.0}
    ]  # fmt: skip
    assert sent([answer], Answer) == [
        {"type": "FunctionCallResponse", "id": "c1", "name": "get_weather", "content": '{"ok": true}'}
    ]
    assert conversation.call_finished("c1", ok("s1-c1"), 1.3) == NOTHING


def test_a_failed_call_is_answered_with_its_error() -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c1")), at(1.0))
    actions = conversation.call_finished("c1", CallResult.failure("s1-c1", "boom"), 1.1)
    [notice] = sent(actions, Notify)
    assert notice["ok"] is False and notice["error"] == "boom" and "boom" in sent(actions, Answer)[0]["content"]


def test_notices_can_be_turned_off() -> None:
    conversation = applied(backend_call_notices=False)
    actions = [*conversation.provider_frame(request(call("c1")), at(1.0))]
    actions += conversation.call_finished("c1", ok("c1"), 2)
    assert [type(a) for a in actions] == [StartCall, Answer]


def test_a_repeated_call_id_is_run_once() -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c1")), at(1.0))
    assert conversation.provider_frame(request(call("c1")), at(1.1)) == []


def test_calls_the_backend_does_not_own_go_to_the_client_as_received() -> None:
    conversation = applied()
    frame = request(call("c1", "open_door"), call("c2", client_side=False))
    assert conversation.provider_frame(frame, at(1.0)) == [ToClient(frame)]


def test_a_mixed_request_is_split() -> None:
    conversation = applied()
    actions = conversation.provider_frame(request(call("c1"), call("c2", "open_door")), at(1.0))
    assert [type(a) for a in actions] == [Notify, StartCall, ToClient]
    assert [f["id"] for f in sent(actions)[0]["functions"]] == ["c2"]


def test_malformed_elements_are_answered_upstream_and_never_relayed() -> None:
    conversation = applied()
    actions = conversation.provider_frame(request(call("c1"), {"id": "c2", "name": 7}, {"name": "x"}), at(1.0))
    assert [a["id"] for a in sent(actions, Answer)] == ["c2"]
    [warning] = sent(actions)
    assert warning["code"] == ErrorCode.MALFORMED_FUNCTION_CALL and "2 malformed" in warning["description"]
    assert "1 were answered" in warning["description"]
    repeated = conversation.provider_frame(request({"id": "c1", "name": 7}), at(1.1))
    assert sent(repeated, Answer) == [] and "0 were answered" in sent(repeated)[0]["description"]


def test_cancellation_stops_the_backend_call_and_the_client_sees_only_its_own() -> None:
    conversation = applied()
    conversation.provider_frame(request(call("c1"), call("c2", "open_door")), at(1.0))
    cancel = text("FunctionCallCancelled", functions=[{"id": "c1", "name": "get_weather"}, {"id": "c2"}])
    actions = conversation.provider_frame(cancel, at(1.1))
    assert actions[0] == CancelCalls(("c1",))
    assert [n["status"] for n in sent(actions, Notify)] == ["cancelled"]
    assert [f["id"] for f in sent(actions)[0]["functions"]] == ["c2"]
    assert conversation.call_finished("c1", ok("s1-c1"), 1.2) == NOTHING  # no answer to a cancelled call
    own = text("FunctionCallCancelled", functions=[{"id": "c2"}])
    assert conversation.provider_frame(own, at(1.3)) == [ToClient(own)]


def test_a_malformed_cancellation_is_relayed() -> None:
    assert applied().provider_frame(text("FunctionCallCancelled", functions=7), at(1.0)) is FORWARD


# --- History ------------------------------------------------------------------------------------------------


def test_history_hides_the_backends_calls() -> None:
    conversation = applied()
    entries = [{"id": "c1", "name": "get_weather"}, {"id": "c2", "name": "open_door"}]
    [rest] = conversation.provider_frame(text("History", function_calls=entries), at(1.0))
    assert isinstance(rest, ToClient) and json.loads(rest.frame)["function_calls"] == entries[1:]
    assert conversation.provider_frame(text("History", function_calls=entries[:1]), at(1.0)) == NOTHING


def test_history_is_relayed_when_shown() -> None:
    conversation = applied(history_backend_calls="shown")
    assert conversation.provider_frame(text("History", function_calls=[{"name": "get_weather"}]), at(1.0)) is FORWARD


# --- the relay path -----------------------------------------------------------------------------------------


def test_frames_the_gateway_does_not_act_on_are_forwarded_unparsed(monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = applied()

    def no_parse(text: str, **kw: Any) -> Any:
        raise AssertionError("parsed")

    def no_clock() -> float:
        raise AssertionError("read the clock")

    monkeypatch.setattr(conversation_module, "parse_json_object", no_parse)
    assert conversation.client_frame(AUDIO, 1.0) is FORWARD
    assert conversation.provider_frame(AUDIO, no_clock) is FORWARD
    assert conversation.provider_frame(text("ConversationText", role="assistant", content="Hi"), no_clock) is FORWARD


def test_an_escaped_type_is_still_intercepted() -> None:
    escaped = request(call("c1")).replace("FunctionCallRequest", "\\u0046unctionCallRequest")
    assert [type(a) for a in applied().provider_frame(escaped, at(1.0))] == [Notify, StartCall]


def test_unknown_provider_messages_are_forwarded() -> None:
    assert applied().provider_frame('{"type": "X", "note": "\\u00e9"}', at(1.0)) is FORWARD
    assert applied().provider_frame('{"FunctionCall', at(1.0)) is FORWARD  # not JSON: relayed as it is


# --- time: keepalive ----------------------------------------------------------------------------------------


def test_keepalive_only_while_calls_are_pending_and_the_provider_heard_nothing() -> None:
    conversation = applied(keepalive_interval=5)  # the provider last heard from us at 0 (Settings)
    assert conversation.tick(10.0) == NOTHING  # no call pending
    conversation.provider_frame(request(call("c1")), at(10.0))
    assert conversation.tick(10.0) == (ToProvider(KEEPALIVE),)
    assert conversation.tick(14.9) == NOTHING
    assert conversation.tick(15.0) == (ToProvider(KEEPALIVE),)
    conversation.client_frame(text("InjectAgentMessage", message="hold on"), 19.0)  # the provider heard from us
    assert conversation.tick(20.0) == NOTHING
    assert conversation.tick(24.0) == (ToProvider(KEEPALIVE),)
    conversation.call_finished("c1", ok("s1-c1"), 25.0)
    assert conversation.tick(40.0) == NOTHING


def test_keepalive_while_parked_once_per_interval_with_calls_or_without() -> None:
    """A parked session (its client away) keeps the provider alive by the same rule, once per interval, whether
    calls are pending or not (one KeepAlive, not one per reason)."""
    conversation = applied(keepalive_interval=5)
    assert conversation.tick(10.0, parked=True) == (ToProvider(KEEPALIVE),)
    assert conversation.tick(12.0, parked=True) == NOTHING
    conversation.provider_frame(request(call("c1")), at(13.0))
    assert conversation.tick(15.0, parked=True) == (ToProvider(KEEPALIVE),)
    assert conversation.tick(16.0, parked=True) == NOTHING


# --- the provider's end -------------------------------------------------------------------------------------


def test_a_normal_provider_close_is_passed_on() -> None:
    assert applied().provider_closed(1000, "bye") == (Close(1000, "bye"),)


def test_other_ends_are_errors_for_the_client() -> None:
    assert closed(applied().provider_closed(1006, "")) == (1011, ErrorCode.UPSTREAM_CLOSED, ErrorCode.UPSTREAM_CLOSED)
    code = ErrorCode.UPSTREAM_UNAVAILABLE
    assert closed(new().provider_unavailable("no route")) == (1011, code, code)
    assert closed(applied().failed()) == (1011, ErrorCode.INTERNAL_ERROR, ErrorCode.INTERNAL_ERROR)
