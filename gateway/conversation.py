"""The rules of one conversation, without I/O: events in, actions out (sans-I/O, like ``websockets``' Protocol).

:class:`Conversation` holds everything the gateway decides about a session; ``gateway.session`` is the loop that
reads frames, feeds them in, and performs the actions that come back (``gateway.actions``). No sockets, no
asyncio, no clock of its own: every event carries the time (``now``, seconds on any monotonic clock; a provider
frame carries a clock, read only when the frame is acted on), so the rules can be tested frame by frame.

Client → provider: ``Settings`` must come first, once (the provider's audio formats checked, the backend
functions merged in); ``UpdateThink`` gets the same merge; ``FunctionCallResponse`` for a backend call is
dropped with a Warning, and ``FunctionCallRequest`` (only a provider may send one) is refused. Frames beyond the
message or byte rate, and big text frames, are dropped before parsing.

Provider → client: ``FunctionCallRequest`` (backend-owned calls go to the workers; malformed elements are
answered with an error; the rest go to the client), ``FunctionCallCancelled`` (cancels backend calls; the client
sees only its own), ``History`` (the backend's calls removed unless HISTORY_BACKEND_CALLS=shown), and, in a
session that keeps its conversation's memory, ``ConversationText`` (relayed and remembered).

Every backend call gets exactly one ``FunctionCallResponse`` upstream, result or error, unless the provider
cancelled it: a call is answered only if it is still pending when its result arrives.

Every other frame gets :data:`~gateway.actions.FORWARD` without being parsed: binary frames always, and provider
text frames that cannot be one of the types above (a cheap substring test, see :meth:`provider_frame`).
"""

from __future__ import annotations

import contextlib
import logging
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from gateway.actions import (
    FORWARD,
    NOTHING,
    Action,
    Actions,
    Answer,
    Close,
    Forward,
    Frame,
    ReadCatalog,
    Remember,
    SayFiller,
    StartCall,
    ToClient,
    ToProvider,
    UseFunctions,
    Wake,
)
from gateway.calls import BackendCalls
from gateway.fillers import Fillers
from gateway.history import inject_history
from gateway.intercept import (
    error_response_frame,
    filter_cancelled,
    filter_history,
    merge_functions,
    merge_update_think,
    split_request,
)
from gateway.limits import ClientBudget, functions_problem
from gateway.memory import ROLES, Entry, call_entry, turn_entry
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from shared.protocol import (
    ErrorCode,
    FunctionCallCancelled,
    FunctionCallResponse,
    ProtocolError,
    Settings,
    UpdateThink,
    dump,
    error_frame,
    parse_json_object,
    validate,
    warning_frame,
)

log = logging.getLogger(__name__)

KEEPALIVE = '{"type":"KeepAlive"}'
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011

SettingsCheck = Callable[[Settings], str | None]
"""Why the provider cannot honour a Settings (its ``audio``, a stored agent...; None when it can):
``Provider.settings_problem``."""
Handler = Callable[["Conversation", str, dict[str, Any], float], Actions]
"""What a message type does: (the conversation, the frame as received, its parsed content, now) → actions."""

_KEEPALIVE: Actions = (ToProvider(KEEPALIVE),)
_READ_CATALOG: Actions = (ReadCatalog(),)


class Conversation:
    """One session's rules. Feed it events in the order they happen; perform the actions it returns in order.

    ``ever_owned`` is every function the gateway process has seen a worker own (``Catalog.ever_owned``, a live
    mapping): a call to one of these names is never the client's, even in a session that started without it.
    """

    def __init__(
        self, config: Config, ever_owned: Mapping[str, FunctionSpec], now: float, session_id: str = "-"
    ) -> None:
        self.config = config
        self.session_id = session_id
        self.owned: Mapping[str, FunctionSpec] = {}
        """Backend functions as of this session's Settings: what the provider was told exists."""
        self._ever_owned = ever_owned
        self.calls = BackendCalls(config, session_id)
        self.fillers = Fillers()
        self.settings_applied = False
        self.closed = False
        """True once an action closed the session: the loop stops feeding events."""
        self._settings_problem: SettingsCheck | None = None
        self._settings: tuple[str, Settings] | None = None
        """Valid Settings waiting for the backend catalog (between ReadCatalog and ``catalog_read``)."""
        self._provider_sent = now
        """When the last frame went to the provider: a KeepAlive is due ``keepalive_interval`` after it."""
        self._budget = ClientBudget(config, now)
        self._hide_history = config.history_backend_calls == "hidden"
        self._remembering = False
        self._history: list[Entry] = []

    # --- lifecycle ------------------------------------------------------------------------------------------

    def provider_opened(self, settings_problem: SettingsCheck) -> None:
        """The provider is connected; ``settings_problem`` tells which Settings it cannot honour (audio formats, a
        stored agent...). Comes before any client frame."""
        self._settings_problem = settings_problem

    def remember(self, history: list[Entry]) -> None:
        """This session keeps its conversation's memory (turns and backend calls become ``Remember`` actions), which
        holds ``history`` so far: the Settings get it as context (``gateway.history``). Before ``catalog_read``."""
        self._remembering, self._history = True, history

    def provider_unavailable(self, description: str) -> Actions:
        return self._fatal(ErrorCode.UPSTREAM_UNAVAILABLE, description, CLOSE_INTERNAL)

    def provider_closed(self, code: int | None, reason: str) -> Actions:
        """The provider ended the connection: a normal close is passed on, any other is an Error to the client."""
        if code in (1000, 1001):
            self.closed = True
            return (Close(code, reason[:120]),)  # type: ignore[arg-type]  # code is an int here
        description = f"The provider closed the connection (code {code}: {reason or 'no reason'})."
        return self._fatal(ErrorCode.UPSTREAM_CLOSED, description, CLOSE_INTERNAL)

    def failed(self) -> Actions:
        """The gateway failed (a bug): the client hears that the session ends, the details stay in the log."""
        return self._fatal(ErrorCode.INTERNAL_ERROR, "The gateway failed; the session ends.", CLOSE_INTERNAL)

    @property
    def backend_functions(self) -> Mapping[str, FunctionSpec]:
        """The functions whose calls the backend takes: this session's Settings-time snapshot, then every name
        this process ever saw a worker own. A session that started during a catalog gap (or before a function
        was deployed) must still never hand a backend-named call to the client."""
        return ChainMap(self.owned, self._ever_owned)  # type: ignore[arg-type]

    # --- client → provider ----------------------------------------------------------------------------------

    def client_frame(self, frame: Frame, now: float) -> Actions:
        refused = self._budget.refuse(frame, self.settings_applied, now)
        if refused is not None:
            return refused
        if not self.settings_applied:
            return self._first_frame(frame)
        if isinstance(frame, bytes):
            self._provider_sent = now
            return FORWARD
        try:
            data = parse_json_object(frame)
            handler = _CLIENT_HANDLERS.get(data["type"])
            if handler is not None:
                return handler(self, frame, data, now)
        except ProtocolError as exc:  # the frame is dropped and the session goes on: a Warning, not an Error
            return (ToClient(warning_frame(exc.code, exc.description)),)
        self._provider_sent = now
        return FORWARD

    def _first_frame(self, frame: Frame) -> Actions:
        """Before Settings, only Settings: anything else ends the session."""
        assert self._settings is None, "no client frame between ReadCatalog and catalog_read()"
        if isinstance(frame, str):
            with contextlib.suppress(ProtocolError):
                data = parse_json_object(frame)
                if data["type"] == "Settings":
                    return self._settings_first(frame, data)
        return self._fatal(
            ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS, "The first message must be Settings.", CLOSE_POLICY
        )

    def _settings_first(self, frame: str, data: dict[str, Any]) -> Actions:
        try:
            settings: Settings = validate(Settings, data)
        except ProtocolError as exc:
            return self._fatal(ErrorCode.INVALID_SETTINGS, exc.description, CLOSE_POLICY)
        # Before anything goes upstream or any audio is relayed: a format the provider cannot honour would be
        # garbled, and too many functions cost every later call.
        assert self._settings_problem is not None, "provider_opened() comes before any client frame"
        problem = self._settings_problem(settings)
        problem = problem or functions_problem(settings.functions, self.config.max_settings_functions)
        if problem is not None:
            return self._fatal(ErrorCode.INVALID_SETTINGS, f"Invalid Settings: {problem}", CLOSE_POLICY)
        self._settings = (frame, settings)
        return _READ_CATALOG

    def catalog_read(self, owned: Mapping[str, FunctionSpec] | None, now: float) -> Actions:
        """The backend functions this session gets (None: the catalog could not be read, Redis down). Sends the
        Settings waiting for them, with the backend functions merged in."""
        assert self._settings is not None, "catalog_read() answers ReadCatalog"
        (frame, settings), self._settings = self._settings, None
        actions: list[Action] = []
        if owned is None:
            log.warning("session %s: backend catalog unreadable (Redis down?)", self.session_id)
            description = "Backend functions are unavailable right now."
            actions.append(ToClient(warning_frame(ErrorCode.BACKEND_UNAVAILABLE, description)))
            owned = {}
        if owned and settings.stored_agent is not None:
            description = (
                "Settings name a stored agent configuration: the gateway cannot add the backend functions' "
                "declarations to it; their calls still run on the backend if it declares them."
            )
            actions.append(ToClient(warning_frame(ErrorCode.STORED_AGENT, description)))
        self.owned = owned
        self.settings_applied = True
        self._provider_sent = now
        actions.append(UseFunctions(owned))
        merged = merge_functions(settings, owned)
        out = frame if merged is settings else dump(merged)
        if self._history:  # a new provider session of a conversation with memory: it starts where it left off
            out, self._history = inject_history(out, self._history), []
        actions.append(ToProvider(out))
        log.info("session %s: settings sent upstream with %d backend functions", self.session_id, len(owned))
        return actions

    def _settings_again(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        return (ToClient(error_frame(ErrorCode.SETTINGS_ALREADY_APPLIED, "Settings were already applied.")),)

    def _update_think(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        """Merge the backend functions into an UpdateThink as into Settings: it replaces the provider's whole
        think configuration, so relayed as is it could redefine a backend function (an ``endpoint`` of the
        client's own) or drop it. Every name the backend owns is merged, not only those of Settings."""
        message: UpdateThink = validate(UpdateThink, data)
        problem = functions_problem(message.functions, self.config.max_settings_functions)
        if problem is not None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"Invalid UpdateThink: {problem}")
        self._provider_sent = now
        backend = self.backend_functions
        return (ToProvider(dump(merge_update_think(message, backend))),) if backend else FORWARD

    def _client_function_response(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        """Relay the client's answer to its own call; drop one for a backend call (the client may not choose
        what a backend function returns), by id or by name. An answer without a string ``content`` still answers
        its call, with an error result: refused, the call would stay open and the conversation hang."""
        call_id, name = data.get("id"), data.get("name")
        if not isinstance(call_id, str) or not call_id:
            validate(FunctionCallResponse, {**data, "id": call_id or None})  # raises: no id, nothing to answer
        name = name if isinstance(name, str) else ""
        if call_id in self.calls.ids or name in self.backend_functions:
            description = f"Function {name!r} runs on the backend; the client's answer was dropped."
            return (ToClient(warning_frame(ErrorCode.FUNCTION_RESPONSE_REFUSED, description)),)
        self._provider_sent = now
        if isinstance(data.get("content"), str) and isinstance(data.get("name"), str):
            return FORWARD
        # A malformed answer is never relayed as it is; its call is answered (with an error) all the same.
        log.warning("session %s: client answered call %.60r with a malformed message", self.session_id, call_id)
        description = (
            f"FunctionCallResponse for {name!r} had no string 'name' or 'content'; the call was answered with an error."
        )
        answer = error_response_frame(call_id, name, "The client could not answer this function call.")
        return (ToProvider(answer), ToClient(warning_frame(ErrorCode.INVALID_MESSAGE, description)))

    def _client_function_request(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        description = "Only the provider may send FunctionCallRequest; the message was dropped."
        return (ToClient(warning_frame(ErrorCode.FUNCTION_REQUEST_REFUSED, description)),)

    def _client_injection(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        """Relayed; noted, so the gateway's filler waits for it and a refusal goes to its sender."""
        self.fillers.client_injection(now)
        self._provider_sent = now
        return FORWARD

    # --- provider → client ----------------------------------------------------------------------------------

    def provider_frame(self, frame: Frame, clock: Callable[[], float]) -> Actions:
        """A frame from the provider. ``clock`` is read only for a frame the gateway acts on: the relay path (audio,
        most text) reads no clock, which would be the costliest part of the core's per-frame work."""
        # A JSON escape can spell the type ("\u0046unctionCallRequest" is a FunctionCallRequest too): such a
        # frame is parsed, not relayed blind, or its backend calls would never be answered (tests/fuzz).
        # Substring tests keep audio and most text frames off the parser.
        if not isinstance(frame, str) or not (
            '"FunctionCall' in frame
            or "\\u" in frame
            or (self._hide_history and '"History"' in frame)
            or (self.fillers.watching and ('"Inject' in frame or '"Agent' in frame))
            or (self._remembering and '"ConversationText"' in frame)
        ):
            return FORWARD
        data: dict[str, Any] = {}
        with contextlib.suppress(ProtocolError):  # not a message the gateway acts on: relayed as it is
            # Also refuses nesting a rewrite could not serialise (tests/fuzz).
            data = parse_json_object(frame, duplicate_keys=True)
        kind = data.get("type", "")
        handler = _PROVIDER_HANDLERS.get(kind)
        if handler is None:
            return FORWARD
        try:
            return handler(self, frame, data, clock())
        except ProtocolError as exc:
            log.warning("session %s: provider sent a malformed %s: %s", self.session_id, kind, exc.description)
            return FORWARD

    def _function_request(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        backend = self.backend_functions
        split = split_request(data, frame, backend)
        actions: list[Action] = []
        for call in split.backend:
            started = self.calls.start(call, backend[call.name], now)
            actions += started
            if any(isinstance(action, StartCall) for action in started):
                delay = self.fillers.started(call.id, backend[call.name], now)
                if delay is not None:
                    actions.append(Wake(delay))
        if split.client_frame is not None:
            actions.append(ToClient(split.client_frame))
        if not split.problems:
            return self._answering(actions, now)
        # One line per request, the first few problems only: a provider can send any number of elements.
        log.warning(
            "session %s: provider sent %d malformed function call(s): %s",
            self.session_id, len(split.problems), "; ".join(split.problems[:3]),
        )  # fmt: skip
        answers = [answer for bad in split.malformed if (answer := self.calls.answer_malformed(bad))]
        description = (
            f"The provider sent {len(split.problems)} malformed function call(s); they were not relayed, and "
            f"{len(answers)} were answered with an error."
        )
        actions += [*answers, ToClient(warning_frame(ErrorCode.MALFORMED_FUNCTION_CALL, description))]
        return self._answering(actions, now)

    def _answering(self, actions: list[Action], now: float) -> list[Action]:
        """``actions``, noting the time if they answer the provider (calls refused or malformed)."""
        if any(isinstance(action, Answer) for action in actions):
            self._provider_sent = now
        return actions

    def _function_cancelled(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        ours, rest = filter_cancelled(validate(FunctionCallCancelled, data), frame, self.calls.ids)
        actions = self.calls.cancel(ours)
        for call_id in ours:
            self.fillers.ended(call_id)
        return actions if rest is None else [*actions, ToClient(rest)]

    # Speech and injections matter to the fillers (``gateway.fillers``); the frames themselves go on as received,
    # except InjectionRefused of the gateway's own filler, which the client never asked for.

    def _speech(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        """InjectionRefused, AgentStartedSpeaking, AgentAudioDone."""
        relay, say = self.fillers.provider_event(data["type"], now)
        if relay and say is None:
            return FORWARD
        return self._saying(say, now, [ToClient(frame)] if relay else [])

    def _saying(self, say: SayFiller | None, now: float, actions: list[Action]) -> list[Action]:
        """``actions``, then the filler ``say`` (if any) and its progress notice."""
        if say is not None:
            log.info("session %s: filler for call %s", self.session_id, say.call_id)
            self._provider_sent = now
            actions += [say, *self.calls.progress(say.call_id, say.text)]
        return actions

    def _history(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        if not self._hide_history:
            return FORWARD
        rest = filter_history(data, frame, self.backend_functions, self.calls.ids)
        return NOTHING if rest is None else (ToClient(rest),)

    def _conversation_text(self, frame: str, data: dict[str, Any], now: float) -> Actions:
        """Relayed as received, and remembered: the memory is fed by turns and call answers, never by History
        (which repeats them)."""
        role, content = data.get("role"), data.get("content")
        if not self._remembering or role not in ROLES or not isinstance(content, str):
            return FORWARD
        return (Forward(), Remember(turn_entry(role, content)))

    # --- backend calls and time ----------------------------------------------------------------------------

    def call_finished(self, call_id: str, result: CallResult, now: float) -> Actions:
        """A backend call's result: answered upstream once, unless the call was cancelled meanwhile."""
        self.fillers.ended(call_id)
        call = self.calls.pending_call(call_id) if self._remembering else None
        actions = self.calls.finished(call_id, result, now)
        if actions:
            self._provider_sent = now
            if call is not None:
                return [*actions, Remember(call_entry(call.id, call.name, call.arguments, result))]
        return actions

    def call_progress(self, call_id: str, message: str) -> Actions:
        """A running backend call reported progress: a notice for the client (nothing for an unknown or finished
        call). Only ``Notify`` actions: the loop may queue them without awaiting anything."""
        return self.calls.progress(call_id, message)

    def tick(self, now: float, parked: bool = False) -> Actions:
        """Time passes. While backend calls are pending no audio may flow, nor while the session is ``parked``
        (its client away, ``gateway.resume``): the provider must still hear from us. A filler falls due."""
        actions = self._saying(self.fillers.due(now), now, []) if self.calls.pending else []
        if (self.calls.pending or parked) and now - self._provider_sent >= self.config.keepalive_interval:
            self._provider_sent = now
            return [*actions, *_KEEPALIVE] if actions else _KEEPALIVE
        return actions or NOTHING

    # --- the end --------------------------------------------------------------------------------------------

    def _fatal(self, code: str, description: str, close_code: int) -> Actions:
        """An Error the client can show, then the close."""
        self.closed = True
        return (Close(close_code, code, error_frame(code, description)),)


# Dispatch on the message type, one table per direction; a type not listed is relayed as received.
_CLIENT_HANDLERS: dict[str, Handler] = {
    "Settings": Conversation._settings_again,
    "UpdateThink": Conversation._update_think,
    "FunctionCallResponse": Conversation._client_function_response,
    "FunctionCallRequest": Conversation._client_function_request,
    "InjectAgentMessage": Conversation._client_injection,
}
_PROVIDER_HANDLERS: dict[str, Handler] = {
    "FunctionCallRequest": Conversation._function_request,
    "FunctionCallCancelled": Conversation._function_cancelled,
    "History": Conversation._history,
    "InjectionRefused": Conversation._speech,
    "AgentStartedSpeaking": Conversation._speech,
    "AgentAudioDone": Conversation._speech,
    "ConversationText": Conversation._conversation_text,
}
