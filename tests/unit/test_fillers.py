"""Fillers and progress notices in the conversation core: frames and times in, actions out (``gateway.fillers``)."""

from __future__ import annotations

import json
from typing import Any

from gateway.actions import FORWARD, Notify, SayFiller, StartCall, ToClient, Wake
from gateway.conversation import Conversation
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from tests.unit.test_conversation import at, call, request, sent, text

SLOW = FunctionSpec(
    name="slow_lookup",
    description="Slow.",
    parameters={"type": "object", "properties": {}},
    filler="One moment while I look that up.",
    filler_delay=1.5,
)
QUIET = SLOW.model_copy(update={"name": "quiet_lookup", "filler": None})
REFUSED = text("InjectionRefused", message="The agent is speaking.")


def applied(**config: Any) -> Conversation:
    conversation = Conversation(Config(**config), {}, now=0.0, session_id="s1")
    conversation.provider_opened(lambda settings: None)
    conversation.client_frame(text("Settings", agent={}), 0.0)
    conversation.catalog_read({"slow_lookup": SLOW, "quiet_lookup": QUIET}, 0.0)
    return conversation


def started(conversation: Conversation, *ids: str, name: str = "slow_lookup", now: float = 10.0) -> list[Any]:
    return list(conversation.provider_frame(request(*(call(i, name) for i in ids)), at(now)))


def says(actions: Any) -> list[SayFiller]:
    return [a for a in actions if isinstance(a, SayFiller)]


def done(conversation: Conversation, call_id: str, now: float) -> Any:
    return conversation.call_finished(call_id, CallResult(call_id=call_id, ok=True, content="{}"), now)


def test_a_slow_call_gets_its_filler_once_after_the_delay() -> None:
    conversation = applied()
    actions = started(conversation, "c1")
    assert Wake(1.5) in actions
    assert says(conversation.tick(11.4)) == []
    first = conversation.tick(11.5)
    assert says(first) == [SayFiller("c1", SLOW.filler)]
    assert [n["status"] for n in sent(first, Notify)] == ["progress"]
    assert sent(first, Notify)[0]["message"] == SLOW.filler
    assert says(conversation.tick(20.0)) == []  # once


def test_a_call_answered_before_the_delay_says_nothing() -> None:
    conversation = applied()
    started(conversation, "c1")
    answer = done(conversation, "c1", 11.0)
    assert not says(answer)
    assert says(conversation.tick(12.0)) == []


def test_a_function_without_a_filler_asks_for_no_wake() -> None:
    conversation = applied()
    actions = started(conversation, "c1", name="quiet_lookup")
    assert [type(a) for a in actions if isinstance(a, StartCall | Wake)] == [StartCall]
    assert says(conversation.tick(30.0)) == []


def test_a_cancelled_calls_filler_is_cancelled() -> None:
    conversation = applied()
    started(conversation, "c1")
    cancelled = text("FunctionCallCancelled", functions=[{"id": "c1", "name": "slow_lookup"}])
    conversation.provider_frame(cancelled, at(11.0))
    assert says(conversation.tick(12.0)) == []


def test_several_slow_calls_get_one_filler_per_turn() -> None:
    conversation = applied()
    started(conversation, "c1", "c2")
    assert len(says(conversation.tick(11.5))) == 1
    started(conversation, "c3", now=12.0)
    assert says(conversation.tick(14.0)) == []
    for call_id in ("c1", "c2", "c3"):
        done(conversation, call_id, 15.0)
    started(conversation, "c4", now=20.0)  # a new turn
    assert says(conversation.tick(21.5)) == [SayFiller("c4", SLOW.filler)]


def test_the_refusal_of_the_gateways_filler_is_not_relayed_and_retried_once_when_silent() -> None:
    conversation = applied()
    started(conversation, "c1")
    assert says(conversation.tick(11.5))
    assert conversation.provider_frame(REFUSED, at(11.6)) == []  # not the client's
    retry = conversation.provider_frame(text("AgentAudioDone"), at(12.0))
    assert sent(retry) == [{"type": "AgentAudioDone"}]
    assert says(retry) == [SayFiller("c1", SLOW.filler)]
    assert conversation.provider_frame(REFUSED, at(12.1)) == []
    assert conversation.provider_frame(text("AgentAudioDone"), at(13.0)) is FORWARD  # once only


def test_a_refused_filler_is_dropped_when_its_call_ends() -> None:
    conversation = applied()
    started(conversation, "c1", "c2")
    conversation.tick(11.5)
    conversation.provider_frame(REFUSED, at(11.6))
    done(conversation, "c1", 11.8)
    assert conversation.provider_frame(text("AgentAudioDone"), at(12.0)) is FORWARD


def test_the_clients_injection_and_its_refusal_are_its_own() -> None:
    conversation = applied()
    assert conversation.client_frame(text("InjectAgentMessage", message="Hi."), 1.0) is FORWARD
    assert conversation.provider_frame(REFUSED, at(1.1)) is FORWARD


def test_the_filler_waits_while_the_clients_injection_is_outstanding() -> None:
    conversation = applied()
    started(conversation, "c1")
    conversation.client_frame(text("InjectAgentMessage", message="Hi."), 11.0)
    assert says(conversation.tick(11.5)) == []
    resumed = conversation.provider_frame(REFUSED, at(11.7))
    assert sent(resumed) == [json.loads(REFUSED)]  # the client's refusal, relayed
    assert says(resumed) == [SayFiller("c1", SLOW.filler)]
    # Ours is outstanding now: the next refusal is ours, the next client injection's after it is the client's.
    conversation.client_frame(text("InjectAgentMessage", message="Hi."), 11.8)
    assert conversation.provider_frame(REFUSED, at(11.9)) == []
    assert conversation.provider_frame(REFUSED, at(12.0)) is FORWARD


def test_the_filler_is_sent_after_the_clients_injection_is_spoken() -> None:
    conversation = applied()
    started(conversation, "c1")
    conversation.client_frame(text("InjectAgentMessage", message="Hi."), 11.0)
    conversation.tick(11.5)
    spoken = conversation.provider_frame(text("AgentStartedSpeaking"), at(11.6))
    assert says(spoken) == [SayFiller("c1", SLOW.filler)]
    assert isinstance(spoken[0], ToClient)


def test_progress_notices_for_pending_calls_only() -> None:
    conversation = applied()
    started(conversation, "c1")
    [notice] = sent(conversation.call_progress("c1", "Still searching."), Notify)
    assert notice == {
        "type": "BackendFunctionCall", "id": "c1", "name": "slow_lookup", "status": "progress",
        "message": "Still searching.",
    }  # fmt: skip
    assert conversation.call_progress("nope", "x") == []
    done(conversation, "c1", 11.0)
    assert conversation.call_progress("c1", "late") == []


def test_progress_notices_honour_backend_call_notices() -> None:
    conversation = applied(backend_call_notices=False)
    started(conversation, "c1")
    assert conversation.call_progress("c1", "Still searching.") == []
    assert not sent(conversation.tick(11.5), Notify)
