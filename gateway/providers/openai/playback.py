"""What the client has heard of the agent's speech, and what it no longer waits for, without I/O.

OpenAI generates audio faster than real time, so at a barge-in it does not know how much of an answer the listener
heard: the client must say, with ``conversation.item.truncate``, or the model believes it said the rest.
:class:`Playback` estimates the position: the client plays each item's audio at real-time speed from when its first
delta was sent (or from when the item before it ends, if that is later), so the position is
``min(time since playback start, audio sent for the item)``. The time is an input (``now``), never read here.

:class:`Deadlines` holds the calls handed to the client (not the backend's): one the client does not answer by its
deadline is answered to OpenAI with an error, so the response can go on; a late answer is then dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.protocol import ErrorCode

LATE_ANSWER = ErrorCode.FUNCTION_RESPONSE_LATE
"""Warning: the client answered a call after its deadline, when OpenAI already had an error for it; dropped."""


@dataclass
class _Item:
    item_id: str
    response_id: str
    started: float
    """When the client starts playing it (seconds, the bridge's clock)."""
    sent_ms: float = 0.0
    """Audio of the item sent to the client so far."""

    def end(self) -> float:
        return self.started + self.sent_ms / 1000


class Playback:
    """The assistant audio item the client is playing, and the items cut at a barge-in (their audio is dropped)."""

    def __init__(self) -> None:
        self._item: _Item | None = None
        self._cut: set[str] = set()

    def sent(self, item_id: str, response_id: str, audio_ms: float, now: float) -> bool:
        """``audio_ms`` of ``item_id`` go to the client now; False when the item was cut (send nothing)."""
        if item_id in self._cut:
            return False
        if self._item is None or self._item.item_id != item_id:
            start = now if self._item is None else max(now, self._item.end())
            self._item = _Item(item_id, response_id, start)
        self._item.sent_ms += audio_ms
        return True

    def interrupt(self, now: float) -> tuple[_Item, int] | None:
        """The user started speaking: the item still playing, and the position heard (ms), if any. The item is
        cut: its later audio is not sent."""
        item, self._item = self._item, None
        if item is None or now >= item.end():
            return None
        self._cut.add(item.item_id)
        return item, round(max(0.0, min((now - item.started) * 1000, item.sent_ms)))


def truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    """``conversation.item.truncate``: the model forgets the audio the listener did not hear."""
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}


class Deadlines:
    """Deadlines of the calls forwarded to the client; the ones that passed, to drop their late answers."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._due: dict[str, float] = {}
        self._expired: set[str] = set()

    def start(self, call_id: str, now: float) -> None:
        self._due[call_id] = now + self.timeout

    def stop(self, call_id: str) -> None:
        """Answered or cancelled in time: no deadline any more."""
        self._due.pop(call_id, None)

    def expired(self, call_id: str) -> bool:
        return call_id in self._expired

    def tick(self, now: float) -> list[str]:
        """The calls whose deadline passed at ``now``, oldest first; each is reported once."""
        late = [call_id for call_id, due in self._due.items() if due <= now]
        for call_id in late:
            del self._due[call_id]
            self._expired.add(call_id)
        return late


def timeout_output(name: str, timeout: float) -> str:
    """The error OpenAI gets for a call the client did not answer in time."""
    return json.dumps({"error": f"The client handling {name} did not answer in time ({timeout:g} s)."})
