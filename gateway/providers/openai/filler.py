"""A slow backend call's filler line, spoken by OpenAI without entering the conversation.

The gateway asks for a filler ("One moment while I look that up.") while a backend call runs
(``Provider.say_filler``). Said as an ordinary response, the line would join the conversation as if the model had
said it, and the model would take it as part of the call's answer. So it is an *out-of-band* response:
``response.create`` with ``conversation: "none"`` (its output is not added to the conversation), ``input: []``
(the model needs no context to read a line out), instructions to say the line verbatim, no tools, and
``metadata`` marking it as the gateway's filler. Its audio and transcript reach the client like any agent speech.

It still waits its turn like every response the bridge asks for: never while a response is active, so its audio
never interleaves with the agent's; and the model's continuation after the call's answer waits the few hundred
milliseconds until the filler's response is done (OpenAI generates faster than real time). The call's
``function_call_output`` itself is never held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.providers.openai.translate import SAY_EXACTLY

FILLER_METADATA = {"gateway": "filler"}
"""``response.metadata`` of a filler response: OpenAI echoes it in the response's events."""


@dataclass(frozen=True, slots=True)
class Filler:
    """A filler line waiting for its response (in the bridge's queue of wanted responses)."""

    text: str


def filler_create(text: str, event_id: str) -> dict[str, Any]:
    """The out-of-band ``response.create`` that says ``text`` verbatim."""
    response = {
        "conversation": "none",
        "input": [],
        "instructions": SAY_EXACTLY + text,
        "tool_choice": "none",
        "metadata": FILLER_METADATA,
    }
    return {"type": "response.create", "event_id": event_id, "response": response}
