"""The state of one OpenAI Realtime conversation seen through the component protocol, without I/O.

:class:`Bridge` takes component frames from the session (``from_component``) and OpenAI events from the
provider (``from_provider``) and returns, each time, the OpenAI events to send and the component frames to
hand the session. The pure message mapping is in :mod:`.translate`, the calls it waits on are kept by
:mod:`.ledger`; this class adds the rules that need memory:

- **Readiness.** ``SettingsApplied`` goes out only once OpenAI confirms the ``session.update`` it came from;
  user messages and input audio before that wait. Settings and ``Update*`` messages are :mod:`.configure`'s:
  one ``session.update`` at a time, each confirmed or refused on its own; errors are mapped by :mod:`.errors`.
- **Function calls.** Each model call becomes a component ``FunctionCallRequest`` (``client_side: true``), so
  the session treats it exactly like a Deepgram call: backend-owned ones run on the workers, the rest go to the
  client. Answers come back as ``FunctionCallResponse`` and become ``function_call_output`` items.
- **One ``response.create`` at a time.** After every call of a response is answered *and* that response is
  done, exactly one ``response.create`` asks the model to continue. Nothing is created while a response is
  active (OpenAI would answer ``conversation_already_has_active_response``); requests wait and coalesce.
- **Side effects.** OpenAI also sends ``.done`` events for cancelled responses. A call to a function with
  ``side_effects`` is handed over only once its response ended ``completed``; other calls go at once (lower
  latency) and are cancelled with ``FunctionCallCancelled`` if their response ends any other way.
- **Speaking.** The first audio or text of a response gives ``AgentStartedSpeaking``; its end ``AgentAudioDone``.
  Transcripts give one ``ConversationText`` per item.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from gateway.providers.base import Frame
from gateway.providers.openai import translate as tr
from gateway.providers.openai.audio import OPENAI_RATE, Resampler
from gateway.providers.openai.configure import SessionConfig
from gateway.providers.openai.errors import error_event, failed_response
from gateway.providers.openai.filler import Filler, filler_create
from gateway.providers.openai.inputs import MAX_WAITING, Out, queue_full, string
from gateway.providers.openai.ledger import Call, Ledger, Response
from gateway.providers.openai.mapping import Transcript, history_wanted
from gateway.providers.openai.playback import LATE_ANSWER, Playback, timeout_output, truncate
from shared.envelopes import FunctionSpec
from shared.protocol import ErrorCode

log = logging.getLogger(__name__)

ACTIVE_RESPONSE = "conversation_already_has_active_response"
MAX_HELD_AUDIO = 5 * OPENAI_RATE * 2
"""Bytes of input audio (5 s at 24 kHz PCM16) held until OpenAI confirms the Settings; later audio is dropped."""


class Bridge:
    """One conversation's translation state. Not thread-safe; the adapter calls it from one event loop."""

    def __init__(
        self, voice: str = "marin", clock: Callable[[], float] = time.monotonic, function_timeout: float = 10.0
    ) -> None:
        self.config = SessionConfig(voice)
        self._clock = clock
        self.side_effects: set[str] = set()
        self.ready = False
        """OpenAI confirmed the session.update made from Settings."""
        self._held: list[dict[str, Any]] = []
        """Items injected before the session was ready."""
        self._held_audio: list[dict[str, Any]] = []
        self._held_audio_bytes = 0
        self._wanted: deque[str | Filler | None] = deque()
        """Responses to create when no response is active: None = continue the conversation, text = say it, a
        :class:`Filler` = say it out of band (:mod:`.filler`)."""
        self._requested_filler = False
        """The response.create awaiting its response.created is a filler's."""
        self._requested = False
        """A response.create was sent and its response.created has not arrived yet."""
        self._request_event_id = ""
        self._request_count = 0
        self._active: Response | None = None
        self._ledger = Ledger(clock, function_timeout)
        self._transcript = Transcript()
        self._audio_in: Resampler | None = None
        self._audio_out: Resampler | None = None
        self._bytes_per_ms = OPENAI_RATE * 2 / 1000
        self._playback = Playback()

    def use_functions(self, owned: Mapping[str, FunctionSpec]) -> None:
        self.side_effects = {name for name, spec in owned.items() if spec.side_effects}
        self._ledger.owned = set(owned)
        self.config.use_functions(owned)

    # --- component frames from the session -----------------------------------------------------------------

    def from_component(self, frame: Frame) -> Out:
        out = Out()
        if isinstance(frame, bytes):
            pcm = self._audio_in.process(frame) if self._audio_in is not None else frame
            if pcm and self.ready:
                out.provider.append(tr.audio_append(pcm))
            elif pcm and not self.config.settings_refused and self._held_audio_bytes + len(pcm) <= MAX_HELD_AUDIO:
                self._held_audio.append(tr.audio_append(pcm))  # OpenAI takes no audio before the Settings
                self._held_audio_bytes += len(pcm)
            return out
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return out  # the session validates client frames; nothing useful to do with this
        kind = message.get("type")
        handler = _COMPONENT_HANDLERS.get(str(kind))
        if handler is None:
            log.info("message type %r has no OpenAI translation; dropped", kind)
            out.client.append(
                tr.warning(ErrorCode.UNSUPPORTED_MESSAGE, f"{kind} is not supported with the OpenAI provider.")
            )
            return out
        handler(self, message, out)
        return out

    def _on_settings(self, message: dict[str, Any], out: Out) -> None:
        plan = self.config.settings(message, out)
        self._audio_in = Resampler(plan.input.client_rate, OPENAI_RATE) if plan.input.resample else None
        self._audio_out = Resampler(OPENAI_RATE, plan.output.client_rate) if plan.output.resample else None
        self._bytes_per_ms = plan.output.bytes_per_ms
        self._transcript.history = history_wanted(message)
        if (text := tr.greeting(message)) is not None:
            self._wanted.append(text)

    def _on_update_prompt(self, message: dict[str, Any], out: Out) -> None:
        addition = string(message, "prompt", out)
        if addition is not None:
            self.config.update_prompt(addition, out)

    def _on_inject_user_message(self, message: dict[str, Any], out: Out) -> None:
        content = string(message, "content", out)
        if content is None:
            return
        item = tr.user_message(content)
        if self.ready:
            out.provider.append(item)
        elif len(self._held) >= MAX_WAITING:
            out.client.append(queue_full("InjectUserMessage", "messages are waiting for the session to be ready"))
            return
        else:
            self._held.append(item)
        self._want(None)
        self._pump(out)

    def _on_inject_agent_message(self, message: dict[str, Any], out: Out) -> None:
        text = string(message, "message", out, older="content")
        if text is None:
            return
        if len(self._wanted) >= MAX_WAITING:
            out.client.append(queue_full("InjectAgentMessage", "responses are waiting for the active one to end"))
            return
        self._want(text)
        self._pump(out)

    def _on_function_call_response(self, message: dict[str, Any], out: Out) -> None:
        call_id, content = message.get("id"), message.get("content")
        if isinstance(call_id, str) and self._ledger.deadlines.expired(call_id):
            out.client.append(tr.warning(LATE_ANSWER, f"The answer to call {call_id} came after its deadline."))
            return
        call = self._ledger.call(call_id) if isinstance(call_id, str) else None
        if call is None or call.answered or not isinstance(content, str):
            log.info("answer to call %r dropped: unknown, cancelled or already answered", call_id)
            return
        self._answer(call, content, out)

    def say_filler(self, text: str) -> Out:
        """A slow backend call's filler line (:mod:`.filler`); one waiting at a time is enough."""
        out = Out()
        if not any(isinstance(say, Filler) for say in self._wanted):
            self._wanted.append(Filler(text))
            self._pump(out)
        return out

    def tick(self, now: float) -> Out:
        """Answer with an error each client call whose deadline passed at ``now``, so the response goes on."""
        out = Out(client=self._transcript.tick(now))
        for call in self._ledger.overdue(now):
            log.warning("call %s (%s): the client did not answer in time", call.call_id, call.name)
            self._answer(call, timeout_output(call.name, self._ledger.deadlines.timeout), out)
        return out

    def _answer(self, call: Call, content: str, out: Out) -> None:
        self._ledger.answered(call)
        out.provider.append(tr.function_output(call.call_id, content))
        out.client += self._transcript.call(call.call_id, call.name, call.arguments, content)
        self._settle(self._ledger.response_of(call), out)

    def _on_keepalive(self, message: dict[str, Any], out: Out) -> None:
        """OpenAI needs no keepalive: the WebSocket's own pings keep the connection open."""

    # --- OpenAI events -------------------------------------------------------------------------------------

    def from_provider(self, text: str) -> Out:
        out = Out()
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            log.warning("provider sent a frame that is not a JSON object; ignored")
            return out
        kind = str(event.get("type"))
        handler = _PROVIDER_HANDLERS.get(kind)
        if handler is not None:
            handler(self, event, out)
        elif kind in tr.SILENT_EVENTS:
            log.debug("provider event %s needs no translation", kind)
        else:
            log.info("provider event %s is not translated; not sent to the client", kind)
        return out

    def _on_session_created(self, event: dict[str, Any], out: Out) -> None:
        out.client.append(tr.welcome(event))

    def _on_session_updated(self, event: dict[str, Any], out: Out) -> None:
        update = self.config.updated(out)
        if update is not None and update.kind == "Settings":
            self.ready = True
            out.client.insert(0, tr.settings_applied())
            out.provider[:0] = self._held_audio + self._held  # before any next update
            self._held, self._held_audio = [], []
            self._pump(out)

    def _on_speech_started(self, event: dict[str, Any], out: Out) -> None:
        """A barge-in: OpenAI learns what was heard; a response it was said in gets no continuation."""
        out.client.append(tr.user_started_speaking())
        cut = self._playback.interrupt(self._clock())
        if cut is None:
            return
        item, heard_ms = cut
        out.provider.append(truncate(item.item_id, heard_ms))
        response = self._ledger.response(item.response_id)
        if response is not None and response is not self._active:  # the active one ends cancelled: same rule
            self._cancel(response, out)
        self._wanted = deque(say for say in self._wanted if say is not None)  # server VAD answers the user

    def _on_text(self, event: dict[str, Any], out: Out) -> None:
        """Message items, transcripts: ConversationText and History, the user's turn first."""
        out.client += self._transcript.handle(event, self._clock())

    def _on_response_created(self, event: dict[str, Any], out: Out) -> None:
        self._requested = False
        response_id = str(tr.as_dict(event.get("response")).get("id"))
        self._active = self._ledger.open(response_id)

    def _on_output_audio(self, event: dict[str, Any], out: Out) -> None:
        audio, now = tr.audio_bytes(event), self._clock()
        heard = len(audio) / self._bytes_per_ms
        if not self._playback.sent(str(event.get("item_id")), str(event.get("response_id")), heard, now):
            return  # cut at a barge-in: the client wants silence
        self._start_speaking(event, out)
        pcm = self._audio_out.process(audio) if self._audio_out else audio
        if pcm:
            out.client.append(pcm)

    def _on_output_delta(self, event: dict[str, Any], out: Out) -> None:
        self._start_speaking(event, out)

    def _on_call(self, event: dict[str, Any], out: Out) -> None:
        info = tr.call_info(event)
        if info is not None:
            self._add_call(info, out)

    def _on_response_done(self, event: dict[str, Any], out: Out) -> None:
        response_data = tr.as_dict(event.get("response"))
        for info in tr.calls_in_response(event):
            self._add_call(info, out)
        response = self._ledger.response(str(response_data.get("id")))
        status = response_data.get("status")
        if self._active is response:
            self._active = None
        if (failure := failed_response(response_data)) is not None:
            out.client.append(failure)  # else the agent would just go mute
        if response is None:
            self._pump(out)
            return
        if response.speaking:
            tail = self._audio_out.flush() if self._audio_out else b""
            if tail and status == "completed":  # after a barge-in the client wants silence, not the tail
                out.client.append(tail)
            out.client.append(tr.agent_audio_done())
        if status == "completed":
            response.completed = True
            self._emit([c for c in response.calls.values() if not c.emitted], out)
            self._settle(response, out)
        else:
            log.info("response %s ended %s", response.id, status)
            self._cancel(response, out)
        self._pump(out)

    def _on_error(self, event: dict[str, Any], out: Out) -> None:
        if self.config.refused(event, out) is not None:
            if self.config.settings_refused:
                out.end = "OpenAI refused the Settings"
            return
        details = tr.as_dict(event.get("error"))
        if details.get("code") == ACTIVE_RESPONSE and self._requested:
            # Server VAD started a response just before ours arrived: ask again once it is done.
            self._requested = False
            if not self._requested_filler:  # a filler is dropped: the agent is answering anyway
                self._wanted.appendleft(None)
            log.warning("response.create raced an automatic response; it will be sent again")
            out.client.append(tr.warning(ACTIVE_RESPONSE, str(details.get("message") or "")))
            return
        if self._requested and details.get("event_id") == self._request_event_id:
            self._requested = False  # our response.create was refused: no response.created will come
        out.client.append(error_event(event))

    # --- helpers -------------------------------------------------------------------------------------------

    def _add_call(self, info: tr.CallInfo, out: Out) -> None:
        """Register a call once (it is reported by several events); hand it over unless it must wait."""
        call = self._ledger.add(info, side_effects=info.name in self.side_effects)
        out.client += self._transcript.thinking(info.response_id)
        if call is not None and not call.side_effects:
            self._emit([call], out)

    def _emit(self, calls: list[Call], out: Out) -> None:
        if self._ledger.emit(calls):
            out.client.append(tr.function_call_request((c.call_id, c.name, c.arguments) for c in calls))

    def _cancel(self, response: Response, out: Out) -> None:
        """The response was cancelled or interrupted: its calls still pending are cancelled, none is answered."""
        if pending := self._ledger.cancel(response):
            out.client.append(tr.function_call_cancelled((c.call_id, c.name) for c in pending))

    def _settle(self, response: Response, out: Out) -> None:
        """A completed response whose calls are all answered: the model may continue, once."""
        if response.completed and all(c.answered for c in response.calls.values()):
            self._ledger.forget(response)
            if response.calls:
                self._want(None)
                self._pump(out)

    def _want(self, say: str | None) -> None:
        """Ask for a response; plain requests still waiting coalesce into one."""
        if say is not None or None not in self._wanted:
            self._wanted.append(say)

    def _pump(self, out: Out) -> None:
        """Send the next wanted response.create if nothing is active or about to be."""
        if self.ready and self._wanted and not self._requested and self._active is None:
            self._requested = True
            self._request_count += 1
            self._request_event_id = f"gw_response_{self._request_count}"
            say = self._wanted.popleft()
            self._requested_filler = isinstance(say, Filler)
            if isinstance(say, Filler):
                out.provider.append(filler_create(say.text, self._request_event_id))
            else:
                out.provider.append(tr.response_create(say, self._request_event_id))

    def _start_speaking(self, event: dict[str, Any], out: Out) -> None:
        response = self._ledger.response(str(event.get("response_id")))
        if response is not None and not response.speaking:
            response.speaking = True
            out.client.append(tr.agent_started_speaking(self._clock() - response.created_at))


_Handler = Callable[[Bridge, dict[str, Any], Out], None]

_COMPONENT_HANDLERS: dict[str, _Handler] = {
    "Settings": Bridge._on_settings,
    "UpdatePrompt": Bridge._on_update_prompt,
    "UpdateThink": lambda bridge, message, out: bridge.config.update_think(message, out),
    "UpdateSpeak": lambda bridge, message, out: bridge.config.update_speak(message, out),
    "UpdateListen": lambda bridge, message, out: bridge.config.update_listen(message, out),
    "InjectUserMessage": Bridge._on_inject_user_message,
    "InjectAgentMessage": Bridge._on_inject_agent_message,
    "FunctionCallResponse": Bridge._on_function_call_response,
    "KeepAlive": Bridge._on_keepalive,
}

_PROVIDER_HANDLERS: dict[str, _Handler] = {
    "session.created": Bridge._on_session_created,
    "session.updated": Bridge._on_session_updated,
    "input_audio_buffer.speech_started": Bridge._on_speech_started,
    "conversation.item.added": Bridge._on_text,
    "conversation.item.done": Bridge._on_text,
    "conversation.item.created": Bridge._on_text,  # the beta name, still sent by some deployments
    "conversation.item.input_audio_transcription.completed": Bridge._on_text,
    "conversation.item.input_audio_transcription.failed": Bridge._on_text,
    "input_audio_buffer.committed": Bridge._on_text,
    "response.created": Bridge._on_response_created,
    "response.output_audio.delta": Bridge._on_output_audio,
    "response.output_audio_transcript.delta": Bridge._on_output_delta,
    "response.output_text.delta": Bridge._on_output_delta,
    "response.output_audio_transcript.done": Bridge._on_text,
    "response.output_text.done": Bridge._on_text,
    "response.function_call_arguments.done": Bridge._on_call,
    "response.output_item.done": Bridge._on_call,
    "response.done": Bridge._on_response_done,
    "error": Bridge._on_error,
}
