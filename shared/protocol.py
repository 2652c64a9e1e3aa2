"""Pydantic models of the Deepgram Voice Agent messages the gateway inspects.

The gateway relays almost every frame byte for byte; it parses only the few message types it must act on.
Every model allows extra fields and keeps them, because providers add fields often and a client or provider
must get back what it sent (``thought_signature``, ``listen.provider.version``...). When the gateway must
rewrite a message (Settings with merged functions, a FunctionCallRequest with only the client's functions),
``dump`` serialises only the fields that were present, so nothing new appears in the message.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

__all__ = [
    "BackendFunctionCall",
    "ConversationInfo",
    "ConversationText",
    "Error",
    "ErrorCode",
    "FunctionCall",
    "FunctionCallCancelled",
    "FunctionCallRequest",
    "FunctionCallResponse",
    "FunctionDefinition",
    "Message",
    "ProtocolError",
    "Settings",
    "SettingsApplied",
    "Think",
    "Thinks",
    "UpdateThink",
    "Warning",
    "Welcome",
    "dump",
    "error_frame",
    "parse_json_object",
    "think_entries",
    "warning_frame",
]


class ErrorCode:
    """Codes of the Error and Warning messages the gateway itself sends to the client.

    The first two are the provider's own codes, so clients that already handle them keep working.
    """

    NON_SETTINGS_MESSAGE_BEFORE_SETTINGS = "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
    SETTINGS_ALREADY_APPLIED = "SETTINGS_ALREADY_APPLIED"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    """A text frame that is not a JSON object with a string ``type``, or a known type with bad fields."""
    INVALID_SETTINGS = "INVALID_SETTINGS"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    """The gateway could not open the connection to the provider."""
    UPSTREAM_CLOSED = "UPSTREAM_CLOSED"
    """The provider closed the connection; the session ends."""
    FUNCTION_RESPONSE_REFUSED = "FUNCTION_RESPONSE_REFUSED"
    """Warning: the client answered a call that a backend worker owns; the answer was dropped."""
    RATE_LIMITED = "RATE_LIMITED"
    """The client sent frames faster than CLIENT_MESSAGE_RATE or bytes faster than CLIENT_BYTE_RATE; the excess was
    dropped (sent at most once a second)."""
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    """A text frame after Settings was larger than MAX_TEXT_FRAME_BYTES; it was dropped unread (sent at most once a
    second). The session goes on."""
    QUEUE_FULL = "QUEUE_FULL"
    """Warning: a message had to wait behind too many others for the provider (OpenAI not ready or busy); dropped."""
    TOO_MANY_PENDING_CALLS = "TOO_MANY_PENDING_CALLS"
    """Warning: a backend call beyond MAX_PENDING_CALLS was answered with an error instead of run."""
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    """Warning: the backend catalog could not be read at Settings time; no backend functions this session."""
    STORED_AGENT = "STORED_AGENT"
    """Warning: Settings named a stored agent configuration (``agent`` is its id), into which the gateway cannot
    merge the backend functions: their calls are still run on the backend, if the stored configuration declares
    them. With a provider that has no stored configurations (openai) such Settings are refused instead."""
    INTERNAL_ERROR = "INTERNAL_ERROR"
    """A gateway bug ended the session (the details are in the gateway's log, not in the message)."""
    FUNCTION_REQUEST_REFUSED = "FUNCTION_REQUEST_REFUSED"
    """Warning: the client sent a FunctionCallRequest, which only the provider may send."""
    MALFORMED_FUNCTION_CALL = "MALFORMED_FUNCTION_CALL"
    """Warning: the provider's FunctionCallRequest had malformed elements (or no list of functions at all). They
    were not relayed; each one with a string ``id`` was answered upstream with an error result, and the request's
    well-formed calls were handled as usual."""

    UNSUPPORTED_MESSAGE = "UNSUPPORTED_MESSAGE"
    """Warning (OpenAI provider): a client message OpenAI has no counterpart for; nothing was sent."""
    UNSUPPORTED_SETTING = "UNSUPPORTED_SETTING"
    """Warning (OpenAI provider): part of Settings or an Update* message OpenAI cannot take (a TTS-only voice, a
    function with an endpoint...); that part was left out."""
    UPDATE_REFUSED = "UPDATE_REFUSED"
    """Warning (OpenAI provider): OpenAI refused the session.update of an UpdatePrompt/UpdateThink/UpdateSpeak; the
    session goes on as before it."""
    FUNCTION_RESPONSE_LATE = "FUNCTION_RESPONSE_LATE"
    """Warning (OpenAI provider): the client answered a call after its deadline, when OpenAI already had an error
    for it; the answer was dropped."""
    SETTINGS_NOT_APPLIED = "SETTINGS_NOT_APPLIED"
    """Warning: a client resuming a live session sent Settings that ask for what that session cannot change (its
    audio formats, its agent configuration); the session goes on as first configured."""
    MESSAGES_DROPPED = "MESSAGES_DROPPED"
    """Warning: more messages arrived while the client was away than a parked session keeps; the oldest were
    dropped."""


class ProtocolError(Exception):
    """A frame that cannot be understood; ``code`` is an :class:`ErrorCode` for the Error message."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class Message(BaseModel):
    """Base of every message model: unknown fields are kept and relayed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str


def dump(message: Message) -> str:
    """Serialise a message to a text frame, with only the fields that were set (no invented defaults).

    ``type`` is always written first, even when it came from the model's default.
    """
    data = {"type": message.type, **message.model_dump(mode="json", exclude_unset=True, by_alias=True)}
    return json.dumps(data, separators=(",", ":"))


MAX_NESTING = 100
"""Deepest nesting of arrays and objects accepted in a text frame. Real messages nest less than 20 levels deep;
much deeper ones broke the gateway where it rewrites a message (pydantic serialises at most 255 levels) and a
provider's parser (Python's recursion limit): found by tests/fuzz."""


def parse_json_object(text: str, *, duplicate_keys: bool = False) -> dict[str, Any]:
    """Parse a text frame into a dict that has a string ``type``, or raise :class:`ProtocolError`.

    A frame with a duplicate key is refused unless ``duplicate_keys``: JSON leaves its meaning open, Python
    keeps the last value and other parsers the first. The gateway relays a client's frames as received after
    deciding from their content; a ``FunctionCallResponse`` with two ``id`` keys could otherwise answer one call
    for the gateway and another for the provider. (The provider's frames are read as Python reads them: it is
    the authority on its own calls, and refusing one of its requests could leave a call unanswered.)
    """
    try:
        data = json.loads(text, object_pairs_hook=None if duplicate_keys else _without_duplicates)
    except _DuplicateKey as exc:
        key = exc.args[0][:40]
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"Text frame has a duplicate key: {key!r}.") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"Text frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "Text frame must be a JSON object with a string 'type'.")
    # Counting brackets is cheap; only a frame with that many of them can be nested too deeply.
    if text.count("{") + text.count("[") > MAX_NESTING and _deeper_than(data, MAX_NESTING):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"Text frame nests more than {MAX_NESTING} levels deep.")
    return data


class _DuplicateKey(Exception):
    pass


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return obj


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays and objects in ``data`` nest more than ``limit`` levels deep: level by level, without
    recursion (a deep value must not exhaust the stack), visiting each container once at most."""
    level: list[Any] = [data]
    for _ in range(limit):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def validate(model: type[Message], data: dict[str, Any]) -> Any:
    """Validate ``data`` as ``model`` or raise :class:`ProtocolError` with a short, readable description."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(message)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"Invalid {data.get('type')} message: {problems}") from None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- Settings -------------------------------------------------------------------------------------------------


class FunctionDefinition(_Open):
    """One entry of ``agent.think.functions``. With ``endpoint`` the provider calls it itself."""

    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] | None = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """Deepgram accepts it omitted or null (a function without arguments); relayed as the client wrote it."""
    endpoint: dict[str, Any] | None = None


class Think(_Open):
    functions: list[FunctionDefinition] | None = None


Thinks = Think | list[Think]
"""``think`` is one provider configuration, or (Deepgram, 2026-01) a list of them tried in order (fallback)."""


def think_entries(think: Thinks | None) -> list[Think]:
    """The think configurations of a ``think`` field, whichever form it has."""
    return think if isinstance(think, list) else [] if think is None else [think]


class UpdateThink(Message):
    """Client → provider: replaces the whole think configuration, its function list included (Deepgram)."""

    type: Literal["UpdateThink"] = "UpdateThink"
    think: Thinks

    @property
    def functions(self) -> list[FunctionDefinition]:
        """Every entry's functions: the longest list bounds what the provider may be told (MAX_SETTINGS_FUNCTIONS)."""
        return _longest(self.think)


def _longest(think: Thinks | None) -> list[FunctionDefinition]:
    lists = [entry.functions or [] for entry in think_entries(think)]
    return max(lists, key=len, default=[])


class Agent(_Open):
    think: Thinks | None = None


MAX_SAMPLE_RATE = 192_000
"""Highest ``sample_rate`` any message may declare (studio audio tops out there). Each provider accepts a narrower
range (``gateway.providers.base.AudioSupport``); this bound only keeps absurd numbers away from every piece of code
that sizes a buffer from a rate."""


class AudioFormat(_Open):
    encoding: str | None = None
    sample_rate: Annotated[StrictInt, Field(ge=1, le=MAX_SAMPLE_RATE)] | None = None
    """Strict: ``true`` or ``16000.5`` is a client bug, not a rate; zero or negative rates broke resampling."""


class Audio(_Open):
    input: AudioFormat | None = None
    output: AudioFormat | None = None


class Settings(Message):
    type: Literal["Settings"] = "Settings"
    audio: Audio | None = None
    agent: Agent | str = Field(default_factory=Agent)
    """An agent configuration, or (Deepgram, 2026-04) the id of one stored at Deepgram: relayed, not read."""

    @property
    def stored_agent(self) -> str | None:
        """The id of a stored agent configuration, when ``agent`` is one (the gateway cannot see its functions)."""
        return self.agent if isinstance(self.agent, str) else None

    @property
    def functions(self) -> list[FunctionDefinition]:
        """The declared functions (of the longest list, when ``think`` is a list of fallbacks)."""
        return [] if isinstance(self.agent, str) else list(_longest(self.agent.think))


# --- Function calls -------------------------------------------------------------------------------------------


class FunctionCall(_Open):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"
    """A JSON *string*, as the provider sends it."""
    client_side: bool = True
    """Absent means the client must answer: assuming otherwise would leave the provider waiting forever."""


class FunctionCallRequest(Message):
    type: Literal["FunctionCallRequest"] = "FunctionCallRequest"
    functions: list[FunctionCall]


class FunctionCallResponse(Message):
    type: Literal["FunctionCallResponse"] = "FunctionCallResponse"
    id: str
    name: str
    content: str


class CancelledFunction(_Open):
    id: str
    name: str = ""


class FunctionCallCancelled(Message):
    type: Literal["FunctionCallCancelled"] = "FunctionCallCancelled"
    functions: list[CancelledFunction]


# --- Status messages ------------------------------------------------------------------------------------------


class Welcome(Message):
    type: Literal["Welcome"] = "Welcome"
    request_id: str = ""


class SettingsApplied(Message):
    type: Literal["SettingsApplied"] = "SettingsApplied"


class ConversationText(Message):
    type: Literal["ConversationText"] = "ConversationText"
    role: Literal["user", "assistant"]
    content: str


class Error(Message):
    type: Literal["Error"] = "Error"
    description: str
    code: str


class Warning(Message):
    type: Literal["Warning"] = "Warning"
    description: str
    code: str


def error_frame(code: str, description: str) -> str:
    """The text frame of an ``Error``: the one way the gateway and its adapters build one, so every Error a
    client sees has the same shape (``type``, ``description``, ``code``, in that order)."""
    return dump(Error(code=code, description=description))


def warning_frame(code: str, description: str) -> str:
    """The text frame of a ``Warning`` (see :func:`error_frame`)."""
    return dump(Warning(code=code, description=description))


# --- The gateway's own messages ---------------------------------------------------------------------------


class BackendFunctionCall(Message):
    """Notice to the client about a call a backend worker runs (``started``, any number of ``progress``, then
    ``finished`` or ``cancelled``). A ``progress`` notice carries a ``message``: the worker's report
    (``ctx.progress``) or the filler line the agent was asked to say.

    A type of the gateway's own: official Deepgram clients hand unknown types to the app as plain dicts, so it is
    safe to send; ``BACKEND_CALL_NOTICES=false`` turns it off. The result itself is not included: the provider
    gets it, and the client hears the answer the agent builds from it.
    """

    type: Literal["BackendFunctionCall"] = "BackendFunctionCall"
    id: str
    name: str
    status: Literal["started", "progress", "finished", "cancelled"]
    arguments: str | None = None
    message: str | None = None
    ok: bool | None = None
    worker: str | None = None
    duration_ms: float | None = None
    error: str | None = None


class ConversationInfo(Message):
    """The gateway's first message to a client: which conversation this is (``?conversation=``, or one the gateway
    made), and whether the connection re-attached to its live provider session (``resumed``).

    A type of the gateway's own, sent before anything the provider says (before ``Welcome``)."""

    type: Literal["Conversation"] = "Conversation"
    conversation_id: str
    resumed: bool
