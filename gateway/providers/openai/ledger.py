"""The responses and function calls one OpenAI conversation is still waiting on, without I/O.

OpenAI reports a call several times (``function_call_arguments.done``, ``output_item.done``, ``response.done``)
and may report it before its ``response.created``. The :class:`~.bridge.Bridge` decides what to send; this
ledger only remembers, so the bridge reads as the protocol rules: which responses still have calls, which
response each call belongs to, and when a response can be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.providers.openai.playback import Deadlines
from gateway.providers.openai.translate import CallInfo


@dataclass
class Call:
    call_id: str
    name: str
    arguments: str
    side_effects: bool
    response_id: str
    emitted: bool = False
    """A FunctionCallRequest for it went to the session."""
    answered: bool = False


@dataclass
class Response:
    id: str
    created_at: float
    calls: dict[str, Call] = field(default_factory=dict)
    completed: bool = False
    """``response.done`` arrived with status ``completed``: its calls now only wait for their answers."""
    speaking: bool = False


class Ledger:
    """Responses whose calls are not all answered yet (the active one too), and those calls by id."""

    def __init__(self, clock: Callable[[], float], function_timeout: float = 10.0) -> None:
        self._clock = clock
        self.owned: set[str] = set()
        """Functions the backend owns; calls to the others go to the client, under ``deadlines``."""
        self.deadlines = Deadlines(function_timeout)
        self._responses: dict[str, Response] = {}
        self._calls: dict[str, Call] = {}

    def open(self, response_id: str) -> Response:
        """A response OpenAI just created; its ``created_at`` times ``AgentStartedSpeaking``."""
        response = self._responses[response_id] = Response(response_id, self._clock())
        return response

    def response(self, response_id: str) -> Response | None:
        return self._responses.get(response_id)

    def call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def response_of(self, call: Call) -> Response:
        return self._responses[call.response_id]

    def add(self, info: CallInfo, side_effects: bool) -> Call | None:
        """Record a call the first time it is reported (None on a repeat), under its response; a response never
        seen created is tracked from here."""
        if info.call_id in self._calls:
            return None
        response = self._responses.get(info.response_id) or self.open(info.response_id)
        call = Call(info.call_id, info.name, info.arguments, side_effects, response.id)
        response.calls[call.call_id] = call
        self._calls[call.call_id] = call
        return call

    def forget(self, response: Response) -> None:
        """The response and its calls need nothing more (all answered, or the response was cancelled)."""
        self._responses.pop(response.id, None)
        for call_id in response.calls:
            self._calls.pop(call_id, None)

    def emit(self, calls: list[Call]) -> list[Call]:
        """The calls are handed over now; the client's own get a deadline."""
        for call in calls:
            call.emitted = True
            if call.name not in self.owned:
                self.deadlines.start(call.call_id, self._clock())
        return calls

    def answered(self, call: Call) -> None:
        call.answered = True
        self.deadlines.stop(call.call_id)

    def overdue(self, now: float) -> list[Call]:
        """Client calls whose deadline passed at ``now``, each reported once."""
        return [call for call_id in self.deadlines.tick(now) if (call := self._calls.get(call_id))]

    def cancel(self, response: Response) -> list[Call]:
        """Forget a cancelled or interrupted response; its calls handed over and not answered yet."""
        pending = [c for c in response.calls.values() if c.emitted and not c.answered]
        for call in pending:
            self.deadlines.stop(call.call_id)
        self.forget(response)
        return pending
