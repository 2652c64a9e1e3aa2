"""The backend calls of one session, without I/O: the part of the conversation core (``gateway.conversation``)
that makes sure every call the backend takes is run once and answered once.

A call the backend takes is started (or, past ``MAX_PENDING_CALLS``, answered at once with an error), and then
answered upstream exactly once with its result, unless the provider cancelled it first. Its id stays taken for
the whole session: a repeated request is ignored and the client may never answer it. The client hears of each
call in ``BackendFunctionCall`` notices (``started``, ``progress``, ``finished``, ``cancelled``) unless
BACKEND_CALL_NOTICES is off; notices are queued (``Notify``), so a slow client never delays an answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.actions import NOTHING, Action, Actions, Answer, CancelCalls, Notify, StartCall
from gateway.intercept import MalformedCall, malformed_response_frame, response_frame
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from shared.protocol import BackendFunctionCall, ErrorCode, FunctionCall, dump, warning_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Pending:
    call: FunctionCall
    started: float


class BackendCalls:
    """The calls the backend took in one session (see the module's docstring)."""

    def __init__(self, config: Config, session_id: str) -> None:
        self.session_id = session_id
        self.ids: set[str] = set()
        """Every call id the backend has taken, answered or not: the client may answer none of them."""
        self._pending: dict[str, _Pending] = {}
        self._limit = config.max_pending_calls
        self._notices = config.backend_call_notices

    @property
    def pending(self) -> int:
        """Calls started and neither answered nor cancelled."""
        return len(self._pending)

    def start(self, call: FunctionCall, spec: FunctionSpec, now: float) -> list[Action]:
        """Take a call the backend owns: start it, or answer it at once when too many are pending."""
        if call.id in self.ids:
            log.warning("session %s: duplicate request for call %s ignored", self.session_id, call.id)
            return []
        self.ids.add(call.id)
        actions: list[Action] = [self._notice(call, "started")] if self._notices else []
        if len(self._pending) >= self._limit:
            log.info("session %s: call %s %s not run: %d pending", self.session_id, call.id, call.name, self._limit)
            warning = f"{call.name} was not run: {self._limit} calls already pending."
            actions.append(Notify(warning_frame(ErrorCode.TOO_MANY_PENDING_CALLS, warning)))
            error = f"{call.name} was not run: too many calls are pending. Try again shortly."
            return actions + self._answer(call, CallResult.failure(call.id, error), 0.0)
        self._pending[call.id] = _Pending(call, now)
        actions.append(StartCall(call, self.key(call.id), spec))
        return actions

    def finished(self, call_id: str, result: CallResult, now: float) -> Actions:
        """A call's result: answered upstream, unless the call was cancelled meanwhile."""
        pending = self._pending.pop(call_id, None)
        if pending is None:
            return NOTHING  # cancelled meanwhile: the provider wants no answer
        return self._answer(pending.call, result, now - pending.started)

    def pending_call(self, call_id: str) -> FunctionCall | None:
        """The call ``call_id`` names while it is pending (what it was asked with), else None."""
        pending = self._pending.get(call_id)
        return pending.call if pending is not None else None

    def cancel(self, call_ids: list[str]) -> list[Action]:
        """Stop the pending calls among ``call_ids``: they get no answer."""
        cancelled = [pending.call for call_id in call_ids if (pending := self._pending.pop(call_id, None))]
        if not cancelled:
            return []
        notices = [self._notice(call, "cancelled") for call in cancelled] if self._notices else []
        return [CancelCalls(tuple(call.id for call in cancelled)), *notices]

    def progress(self, call_id: str, message: str) -> list[Action]:
        """A ``progress`` notice for a pending call (a worker's report, a filler said); none for any other call."""
        pending = self._pending.get(call_id)
        if pending is None or not self._notices:
            return []
        return [self._notice(pending.call, "progress", message=message)]

    def answer_malformed(self, call: MalformedCall) -> Answer | None:
        """Answer a malformed element at once, with an error: the provider would otherwise wait for it forever.
        Its id joins the backend's, so it is answered once only and the client may not answer it too."""
        if call.id in self.ids:
            log.warning("session %s: malformed element repeats a call id the backend took", self.session_id)
            return None
        self.ids.add(call.id)
        return Answer(malformed_response_frame(call))

    def key(self, call_id: str) -> str:
        """The call's identity on the backend: the provider's id within this session.

        Provider call ids are unique only as far as the provider cares; keyed alone, a provider reusing an id
        in another session would get that session's stored result. Duplicates within a session still share
        one job (and the session answers an id only once anyway).
        """
        return f"{self.session_id}-{call_id}"

    def _answer(self, call: FunctionCall, result: CallResult, elapsed: float) -> list[Action]:
        actions: list[Action] = []
        if self._notices:
            # Queued before the answer goes out, so the client hears of it before whatever the provider says next.
            fields: dict[str, Any] = {"ok": result.ok, "worker": result.worker_id}
            fields["duration_ms"] = round(elapsed * 1000, 2)
            if not result.ok:
                fields["error"] = result.error
            actions.append(self._notice(call, "finished", **fields))
        actions.append(Answer(response_frame(call, result.content)))
        return actions

    @staticmethod
    def _notice(call: FunctionCall, status: Any, **fields: Any) -> Notify:
        """A ``BackendFunctionCall`` notice: best effort, it must never delay the call it describes."""
        arguments = {"arguments": call.arguments} if status == "started" else {}
        return Notify(dump(BackendFunctionCall(id=call.id, name=call.name, status=status, **arguments, **fields)))
