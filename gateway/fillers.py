"""Filler lines for slow backend calls, without I/O: the part of the conversation core (``gateway.conversation``)
that decides when the agent says "One moment while I look that up."

A backend call whose :class:`~shared.envelopes.FunctionSpec` has a ``filler`` and has not been answered
``filler_delay`` seconds after the gateway saw its request gets the line said once (a :class:`SayFiller` action;
the provider adapter decides how: ``InjectAgentMessage`` for Deepgram, an out-of-band response for OpenAI). One
filler per turn: while backend calls overlap, a second slow call says nothing more; the turn ends when no backend
call is pending. A call answered or cancelled before its delay says nothing.

Injections are the Deepgram protocol's: one outstanding at a time, refused (``InjectionRefused``) while the agent
or the user speaks. So the gateway's own injection waits while the client's is outstanding, and a refusal of the
gateway's own is swallowed (the client never sent it) and retried once, when the agent is next silent
(``AgentAudioDone``), if the call is still running. An injection is outstanding until the provider refuses it or
the agent starts speaking; one unresolved after :data:`OUTSTANDING_LIMIT` seconds no longer blocks the next.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

from gateway.actions import SayFiller
from shared.envelopes import FunctionSpec

log = logging.getLogger(__name__)

OUTSTANDING_LIMIT = 5.0
"""Seconds after which an injection neither refused nor spoken is taken as gone (a provider that said nothing)."""

Owner = Literal["gateway", "client"]


@dataclass(slots=True)
class _Due:
    at: float
    text: str


class Fillers:
    """The filler lines of one session (see the module's docstring). Call ids are the provider's."""

    def __init__(self) -> None:
        self._due: dict[str, _Due] = {}
        """Calls whose filler is not said yet, with when it is due."""
        self._running: set[str] = set()
        """Backend calls started and not yet answered or cancelled: the turn lasts while any is."""
        self._said = False
        """A filler was sent this turn: no other until no backend call is pending."""
        self._outstanding: deque[tuple[Owner, float, str]] = deque()
        """Injections sent and not yet refused or spoken, oldest first: (whose, when, call id or "")."""
        self._retry: str | None = None
        """The call whose refused filler is said again at the next AgentAudioDone."""
        self._retried = False
        self._waiting: SayFiller | None = None
        """A due filler held while the client's injection is outstanding."""
        self._text: dict[str, str] = {}
        """The filler of each call that said one this turn, for its retry."""

    @property
    def watching(self) -> bool:
        """True while provider frames about speech and injections matter to the fillers."""
        return bool(self._running or self._outstanding)

    def started(self, call_id: str, spec: FunctionSpec, now: float) -> float | None:
        """A backend call started: the delay (s) after which :meth:`due` should be asked, or None (no filler)."""
        self._running.add(call_id)
        if spec.filler and not self._said:
            self._due[call_id] = _Due(now + spec.filler_delay, spec.filler)
            return spec.filler_delay
        return None

    def ended(self, call_id: str) -> None:
        """A backend call was answered or cancelled: its filler, due or waiting for a retry, is dropped."""
        self._running.discard(call_id)
        self._due.pop(call_id, None)
        if self._retry == call_id:
            self._retry = None
        if self._waiting is not None and self._waiting.call_id == call_id:
            self._waiting = None
        if not self._running:  # the turn is over
            self._due.clear()
            self._said = self._retried = False
            self._retry = self._waiting = None
            self._text.clear()

    def due(self, now: float) -> SayFiller | None:
        """The filler to say at ``now``, if a call's delay passed and nothing stops it."""
        self._expire(now)
        if self._waiting is not None:  # the client's injection may have expired meanwhile
            return self._resume(now)
        if self._said or not self._due:
            return None
        call_id, first = min(self._due.items(), key=lambda item: item[1].at)
        if first.at > now:
            return None
        self._due.clear()  # one per turn
        self._said = True
        say = SayFiller(call_id, first.text)
        if self._outstanding:  # the client's injection is outstanding: ours waits for it
            self._waiting = say
            return None
        return self._send(say, now)

    def client_injection(self, now: float) -> None:
        """The client sent ``InjectAgentMessage``."""
        self._outstanding.append(("client", now, ""))

    def provider_event(self, kind: str, now: float) -> tuple[bool, SayFiller | None]:
        """``InjectionRefused``, ``AgentStartedSpeaking`` or ``AgentAudioDone`` arrived: (whether the frame goes on
        to the client, a filler to send now)."""
        if kind == "InjectionRefused":
            ours, say = self.refused(now)
            return not ours, say
        return True, self.speaking(now) if kind == "AgentStartedSpeaking" else self.silent(now)

    def refused(self, now: float) -> tuple[bool, SayFiller | None]:
        """``InjectionRefused`` arrived: (whether it was the gateway's, so not for the client; a filler to send)."""
        self._expire(now)
        if not self._outstanding:
            return False, None
        owner, _, call_id = self._outstanding.popleft()
        if owner == "client":
            return False, self._resume(now)
        if not self._retried and call_id in self._running:
            self._retry = call_id
        log.info("filler for call %s refused by the provider%s", call_id, "; will retry" if self._retry else "")
        return True, None

    def speaking(self, now: float) -> SayFiller | None:
        """``AgentStartedSpeaking``: the oldest outstanding injection was accepted."""
        self._expire(now)
        if self._outstanding:
            self._outstanding.popleft()
        return self._resume(now)

    def silent(self, now: float) -> SayFiller | None:
        """``AgentAudioDone``: the agent is silent, the moment to say a refused filler again."""
        self._expire(now)
        if self._retry is None or self._outstanding:
            return None
        call_id, self._retry, self._retried = self._retry, None, True
        text = self._text.get(call_id)
        return self._send(SayFiller(call_id, text), now) if text else None

    def _resume(self, now: float) -> SayFiller | None:
        """The filler held for the client's injection, once none is outstanding."""
        if self._waiting is None or self._outstanding:
            return None
        say, self._waiting = self._waiting, None
        return self._send(say, now)

    def _send(self, say: SayFiller, now: float) -> SayFiller:
        self._outstanding.append(("gateway", now, say.call_id))
        self._text[say.call_id] = say.text
        return say

    def _expire(self, now: float) -> None:
        while self._outstanding and now - self._outstanding[0][1] > OUTSTANDING_LIMIT:
            self._outstanding.popleft()
