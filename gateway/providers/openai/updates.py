"""``session.update`` one at a time, each matched to the ``session.updated`` or ``error`` that answers it.

OpenAI answers every ``session.update`` with ``session.updated``, or with an ``error`` that echoes the update's
``event_id``; ``session.updated`` names no event. Sent one at a time, the answer always belongs to the update in
flight, so an ``UpdatePrompt`` confirmation is never taken for the Settings' (nor the reverse): the next update
waits in :class:`Updates` until the previous one is confirmed or refused.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Update:
    """One ``session.update``: why it was sent (the component message) and what confirms it to the client."""

    kind: str
    """The component message it comes from: ``Settings``, ``UpdatePrompt``, ``UpdateThink``, ``UpdateSpeak``."""
    session: dict[str, Any]
    """The ``session`` fields to update (``type: realtime`` is added when sent)."""
    ack: str | None = None
    """The component frame for the client once OpenAI confirms (``PromptUpdated``...); None for Settings."""
    event_id: str = field(default="", compare=False)


class Updates:
    """The updates not yet answered: at most one on the wire, the others waiting, oldest first."""

    def __init__(self) -> None:
        self._waiting: deque[Update] = deque()
        self._sent: Update | None = None
        self._count = 0

    def __len__(self) -> int:
        return len(self._waiting) + (self._sent is not None)

    def add(self, update: Update) -> dict[str, Any] | None:
        """Queue ``update``; the event to send now, or None when another update is still unanswered."""
        self._waiting.append(update)
        return self._next()

    def confirmed(self) -> tuple[Update | None, dict[str, Any] | None]:
        """``session.updated`` arrived: the update it confirms (None if none was sent), and the next to send."""
        done, self._sent = self._sent, None
        return done, self._next()

    def refused(self, event_id: object) -> tuple[Update | None, dict[str, Any] | None]:
        """An ``error`` echoing ``event_id``: the refused update and the next to send; (None, None) when the error
        is not about the update in flight."""
        if self._sent is None or not event_id or event_id != self._sent.event_id:
            return None, None
        return self.confirmed()

    def _next(self) -> dict[str, Any] | None:
        if self._sent is not None or not self._waiting:
            return None
        self._sent = self._waiting.popleft()
        self._count += 1
        self._sent.event_id = f"gw_session_{self._count}"
        session = {"type": "realtime", **self._sent.session}
        return {"type": "session.update", "event_id": self._sent.event_id, "session": session}
