"""Hypothesis strategies for hostile frames, each labelled with the kind of trouble it carries.

Client frames (what a broken or malicious browser/SDK may send to the gateway) and provider frames (what a
broken provider may send to the gateway) are built from the same pieces: JSON values of every type, strings
that are huge or hold escaped lone surrogates, nesting far deeper than any real message, duplicate keys.
The label (``Hostile.kind``) is what the reliability report counts by.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same frames on every run: CI is reproducible, a failure can be replayed
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure names the exact frame already
    suppress_health_check=list(HealthCheck),  # big examples and slow real I/O are the point here
)
"""The fuzz tests' hypothesis settings; each test adds its ``max_examples``."""
MAX_FRAME = 1 << 20
"""The gateway's default MAX_FRAME_BYTES: a client frame above it closes the session with 1009."""
HUGE_BYTES = 1_000_000
"""Huge strings stay just under MAX_FRAME, so they are parsed rather than refused for size."""
DEPTHS = [64, 99, 100, 101, 128, 255, 256, 300, 500, 900, 960, 970, 975, 980, 985, 990, 1000, 2000, 10_000, 100_000]
"""Nesting depths tried: around the gateway's limit (100), pydantic's serialisation limit (255), Python's
recursion limit (~1000, where a parser deeper in the stack fails first) and far beyond."""
BACKEND_NAMES = ["get_weather", "get_current_time", "slow_echo", "list_notes"]
"""Backend functions whose calls are quick and harmless, whatever the arguments."""
CLIENT_NAMES = ["open_door", "client_tool"]
"""Names the backend does not own: calls to them belong to the client."""
BACKEND_CALL_ID = "<id of the session's backend call>"
"""Stands for the id of a backend call the provider requested in the session; the test fills it in before
sending (hypothesis cannot know the id, the provider makes it up). A client answering a backend call under its own
name must be refused for the id alone."""


@dataclass(frozen=True)
class Hostile:
    kind: str
    frame: str | bytes

    def __repr__(self) -> str:  # failures print frames; a 900 KB one must not flood the output
        size = f"{len(self.frame)} {'bytes' if isinstance(self.frame, bytes) else 'chars'}"
        return f"Hostile({self.kind!r}, {self.frame[:300]!r}{'...' if len(self.frame) > 300 else ''} ({size}))"


def weighted(*choices: tuple[int, st.SearchStrategy[Hostile]]) -> st.SearchStrategy[Hostile]:
    """Pick a strategy with the given relative weights (expensive kinds, like huge frames, are kept rare).

    Hypothesis favours the first entry (where it would shrink to): about a third of all draws. The tables below
    start with a kind that is cheap and telling.
    """
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


def label(kind: str, frames: st.SearchStrategy[str | bytes]) -> st.SearchStrategy[Hostile]:
    return frames.map(lambda frame: Hostile(kind, frame))


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def deeper_than(value: Any, limit: int) -> bool:
    """Arrays/objects nested more than ``limit`` deep (iterative, so it works on any depth)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


# --- building blocks ----------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=16))
"""JSON scalars, including 2**70 (beyond 64 bits) and NaN/Infinity (Python writes and reads them)."""
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
not_string = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4)
"""Lone surrogates: not encodable as UTF-8, so they can only arrive JSON-escaped (``\\ud800``)."""
odd_text = st.one_of(st.text(max_size=40), surrogates, st.sampled_from(["", "\0", "\u202e", "\ufeff", "😀" * 3]))
extra_fields = st.dictionaries(st.text(max_size=10).filter(lambda k: k != "type"), values, max_size=3)


def message(kind: st.SearchStrategy[Any], **optional: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object whose ``type`` comes from ``kind`` and whose other fields may each be present or not."""
    return st.fixed_dictionaries({"type": kind}, optional=optional)


def huge_string() -> st.SearchStrategy[str]:
    """50 KB to just under 1 MB of one character, counted in the bytes it takes once JSON-escaped."""

    def build(char: str, share: float) -> str:
        escaped = len(json.dumps(char).encode()) - 2
        return char * int(share * (HUGE_BYTES - 2_000) / escaped)

    return st.builds(build, st.sampled_from(["x", "é", "字", "😀", "\\", '"', "\0", " "]), st.floats(0.05, 1.0))


def nested(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    return opener * depth + "0" + closer * depth


def deep_value() -> st.SearchStrategy[str]:
    return st.builds(nested, st.sampled_from(DEPTHS), st.sampled_from(["[", '{"a":', '[{"b":']))


def with_raw_field(obj: dict[str, Any], key: str, raw: str) -> str:
    """``obj`` as JSON with one more field whose value is the raw JSON text ``raw``."""
    text = dumps(obj)
    return text[:-1] + ("," if len(obj) else "") + dumps(key) + ":" + raw + "}"


def duplicate_keys(keys: list[str], kinds: list[str]) -> st.SearchStrategy[str]:
    """An object whose keys repeat (Python's parser keeps the last value, other parsers the first)."""
    pairs = st.lists(
        st.tuples(st.sampled_from(keys), st.one_of(st.sampled_from(kinds), st.text(max_size=8))), min_size=2, max_size=6
    )
    return pairs.map(lambda ps: "{" + ",".join(f"{dumps(k)}:{dumps(v)}" for k, v in ps) + "}")


# --- client → gateway ---------------------------------------------------------------------------------------

CLIENT_TYPES = [
    "Settings",
    "KeepAlive",
    "UpdatePrompt",
    "UpdateSpeak",
    "UpdateThink",
    "InjectUserMessage",
    "InjectAgentMessage",
    "FunctionCallResponse",
    "FunctionCallRequest",
]
VALID_CLIENT_MESSAGES = [
    dumps({"type": "KeepAlive"}),
    dumps({"type": "UpdatePrompt", "prompt": "Be brief."}),
    dumps({"type": "InjectAgentMessage", "message": "Hello there."}),
    dumps({"type": "FunctionCallResponse", "id": "fc_1", "name": "open_door", "content": "{}"}),
]


def truncated(texts: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(texts).flatmap(lambda t: st.integers(1, len(t) - 1).map(lambda i: t[:i]))


def _fields(kind: str | list[str], **optional: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    kinds = st.just(kind) if isinstance(kind, str) else st.sampled_from(kind)
    return message(kinds, **optional).map(dumps)


def _one_field(kinds: list[str], fields: list[str], value: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return st.builds(lambda k, f, v: dumps({"type": k, f: v}), st.sampled_from(kinds), st.sampled_from(fields), value)


_names = st.one_of(st.sampled_from(BACKEND_NAMES + CLIENT_NAMES), odd_text, not_string)
CLIENT_KINDS: list[tuple[int, str, st.SearchStrategy[str | bytes]]] = [
    # (weight, label, frames); the first entry gets a third of all draws (see weighted)
    (10, "FunctionCallResponse with wrong fields", _fields(
        "FunctionCallResponse", id=st.one_of(odd_text, not_string), name=_names, content=st.one_of(odd_text, not_string)
    )),
    (8, "text that is not JSON", st.one_of(st.text(max_size=200), truncated(VALID_CLIENT_MESSAGES))),
    (4, "FunctionCallResponse for a backend call's id", st.builds(
        lambda name, content: dumps({"type": "FunctionCallResponse", "id": BACKEND_CALL_ID, "name": name,
                                     "content": content}),
        st.one_of(st.sampled_from(CLIENT_NAMES + BACKEND_NAMES), odd_text),
        st.one_of(st.just('{"forged": true}'), odd_text),
    )),
    (6, "JSON that is not an object", values.filter(lambda v: not isinstance(v, dict)).map(dumps)),
    (6, "object without a string type", message(not_string, content=values).map(dumps) | extra_fields.map(dumps)),
    (8, "unknown message type", st.builds(
        lambda kind, fields: dumps({"type": kind, **fields}), odd_text.filter(lambda t: t not in CLIENT_TYPES),
        extra_fields,
    )),
    (6, "Settings sent again", _fields("Settings", agent=values, audio=values)),
    (8, "InjectUserMessage/InjectAgentMessage with wrong fields", _fields(
        ["InjectUserMessage", "InjectAgentMessage"], content=not_string, message=not_string
    )),
    (5, "Update* with wrong fields", _fields(
        ["UpdatePrompt", "UpdateSpeak", "UpdateThink"], prompt=not_string, speak=values,
        think=st.one_of(values, st.fixed_dictionaries({"functions": values})),
    )),
    (4, "FunctionCallRequest from the client", _fields("FunctionCallRequest", functions=values)),
    (2, "huge string", _one_field(["InjectUserMessage", "UpdatePrompt", "Zzz", "KeepAlive"], ["content", "prompt", "x"],
                                  huge_string())),
    (5, "deep nesting", st.builds(
        lambda kind, raw: with_raw_field({"type": kind}, "x", raw),
        st.sampled_from(["Settings", "InjectUserMessage", "FunctionCallResponse", "KeepAlive", "Zzz"]), deep_value(),
    )),
    (6, "escaped lone surrogates and control characters", st.builds(
        lambda kind, field, s: dumps({"type": kind, field: s}),
        st.sampled_from(["InjectUserMessage", "FunctionCallResponse", "UpdatePrompt"]) | surrogates,
        st.sampled_from(["content", "id", "prompt"]), st.one_of(surrogates, odd_text),
    )),
    (4, "duplicate keys", duplicate_keys(["type", "id", "name", "content"], [*CLIENT_TYPES, "get_weather"])),
    (8, "random binary", st.binary(max_size=2048)),
    (3, "valid", st.sampled_from(VALID_CLIENT_MESSAGES)),
]  # fmt: skip


def client_frames() -> st.SearchStrategy[Hostile]:
    """One frame a client sends after its Settings were applied."""
    return weighted(*((weight, label(kind, frames)) for weight, kind, frames in CLIENT_KINDS))


_bad_format = st.one_of(
    not_string, st.just({}), st.fixed_dictionaries({"sample_rate": st.one_of(odd_text, not_string)})
)
_bad_function = st.fixed_dictionaries(
    {}, optional={"name": st.one_of(not_string, st.just("")), "parameters": not_string}
)
_bad_think = st.one_of(
    not_string,
    st.fixed_dictionaries({"functions": st.one_of(not_string, st.lists(_bad_function, min_size=1, max_size=2))}),
)
FIRST_KINDS: list[tuple[int, str, st.SearchStrategy[str | bytes]]] = [
    (8, "Settings with wrong field types", _fields(
        "Settings", audio=st.one_of(not_string, st.fixed_dictionaries({"input": _bad_format, "output": _bad_format})),
        agent=st.one_of(not_string, st.fixed_dictionaries({"think": _bad_think})),
    )),
    (6, "binary before Settings", st.binary(max_size=1024)),
    (6, "another message before Settings", client_frames().map(lambda hostile: hostile.frame)),
    (3, "deeply nested Settings", deep_value().map(lambda raw: with_raw_field({"type": "Settings"}, "x", raw))),
    (1, "oversized Settings", st.integers(MAX_FRAME + 1, MAX_FRAME + 50_000).map(
        lambda n: dumps({"type": "Settings", "x": "x" * (n - len('{"type":"Settings","x":""}'))})
    )),
    (2, "valid", st.just(dumps({"type": "Settings", "agent": {"think": {"prompt": "hi"}}}))),
]  # fmt: skip


def first_frames() -> st.SearchStrategy[Hostile]:
    """A client's first frame: anything but a valid Settings, and now and then a valid one."""
    return weighted(*((weight, label(kind, frames)) for weight, kind, frames in FIRST_KINDS))


# --- provider → gateway -------------------------------------------------------------------------------------

ID_POOL = ["fc_1", "fc_2", "fc_3", "call_dup"]
"""A few ids drawn again and again: the same id twice in a request, or in several requests."""
ARGUMENTS = ['{"timezone":"UTC"}', '{"location":"Paris"}', '{"text":"hi"}', "{}", "", "not json", "[1,2]"]
_ids = st.one_of(st.sampled_from(ID_POOL), st.text(min_size=1, max_size=12))
_valid_call = st.fixed_dictionaries(
    {"id": _ids, "name": st.sampled_from(BACKEND_NAMES + CLIENT_NAMES), "arguments": st.sampled_from(ARGUMENTS)},
    optional={"client_side": st.booleans(), "thought_signature": st.text(max_size=8)},
)
_loose_call = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(_ids, not_string, st.just(""), surrogates),
        "name": st.one_of(st.sampled_from(BACKEND_NAMES + CLIENT_NAMES), not_string, st.just(""), odd_text),
        "arguments": st.one_of(st.sampled_from(ARGUMENTS), not_string, odd_text),
        "client_side": st.one_of(st.booleans(), not_string, st.sampled_from(["true", "no", "1"])),
    },
)
_huge_call = st.builds(
    lambda field, big, call: {**call, field: big if field != "name" else call["name"] + big[:10_000]},
    st.sampled_from(["id", "arguments", "name", "thought_signature"]),
    huge_string().map(lambda s: s[:200_000]),
    _valid_call,
)


_history_entry = st.builds(
    lambda call, response: {**call, "response": response}, _valid_call, st.sampled_from(['{"ok":1}', "", "secret"])
)
"""A History ``function_calls`` entry: a call as the provider requested it, with its response."""


def escape_letter(frame: str, index: int) -> str:
    """The frame with one letter of its ``type`` written as a JSON escape: the same message to any JSON parser."""
    kind = json.loads(frame)["type"]
    escaped = kind[:index] + f"\\u{ord(kind[index]):04x}" + kind[index + 1 :]
    return frame.replace(dumps(kind), f'"{escaped}"', 1)


def _request(calls: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    return st.lists(calls, min_size=1, max_size=4).map(
        lambda fs: dumps({"type": "FunctionCallRequest", "functions": fs})
    )


PROVIDER_KINDS: list[tuple[int, str, st.SearchStrategy[str | bytes]]] = [
    (10, "FunctionCallRequest, well-formed, ids from a small pool (duplicates)", _request(_valid_call)),
    (8, "FunctionCallRequest with wrong types or missing ids", st.one_of(
        _request(_loose_call), _fields("FunctionCallRequest", functions=values)
    )),
    (6, "FunctionCallCancelled, well-formed or not", st.one_of(
        st.lists(st.fixed_dictionaries({"id": _ids}, optional={"name": st.sampled_from(BACKEND_NAMES)}), max_size=3)
        .map(lambda fs: dumps({"type": "FunctionCallCancelled", "functions": fs})),
        _fields("FunctionCallCancelled", functions=values),
    )),
    (2, "huge strings in a FunctionCallRequest", _request(_huge_call)),
    (3, "FunctionCallRequest with escaped lone surrogates in ids", _request(
        st.builds(lambda s, call: {**call, "id": s}, surrogates, _valid_call)
    )),
    (3, "FunctionCallRequest with deep nesting", st.builds(
        lambda calls, raw: with_raw_field({"type": "FunctionCallRequest", "functions": calls}, "x", raw),
        st.lists(_valid_call, min_size=1, max_size=3), deep_value().filter(lambda v: len(v) < 200_000),
    )),
    (6, "text that is not JSON", st.one_of(
        st.text(max_size=100), st.text(max_size=40).map(lambda t: '"FunctionCallRequest' + t),
        truncated([dumps({"type": "FunctionCallRequest", "functions": [{"id": "x", "name": "get_weather"}]})]),
    )),
    (5, "random binary", st.binary(max_size=4096)),
    (5, "other and unknown message types", st.builds(
        lambda kind, fields: dumps({"type": kind, **fields}),
        st.one_of(st.sampled_from(["ConversationText", "AgentThinking", "Warning", "Error", "History"]), odd_text),
        extra_fields,
    )),
    (3, "duplicate keys", duplicate_keys(["type", "functions"], ["FunctionCallRequest", "FunctionCallCancelled"])),
    (3, "FunctionCallRequest with its type written with escapes", st.builds(
        escape_letter, _request(_valid_call), st.integers(0, len("FunctionCallRequest") - 1)
    )),
    (5, "FunctionCallRequest mixing well-formed and malformed calls", _request(st.one_of(_valid_call, _loose_call))),
    (4, "History with function calls, well-formed or not", st.one_of(
        st.lists(st.one_of(_history_entry, _loose_call, values), max_size=4)
        .map(lambda fs: dumps({"type": "History", "function_calls": fs})),
        _fields("History", function_calls=values, role=st.sampled_from(["user", "assistant"])),
    )),
]  # fmt: skip
ENDINGS = ["client", "client", "1000", "1001", "1008", "1011", "4000", "3001", "abort"]
"""How a script's connection ends: the client leaves, or the provider closes (a code), or the TCP connection
is cut without a close frame."""


def provider_frames() -> st.SearchStrategy[Hostile]:
    """One frame a provider sends to the gateway after SettingsApplied."""
    return weighted(*((weight, label(kind, frames)) for weight, kind, frames in PROVIDER_KINDS))
