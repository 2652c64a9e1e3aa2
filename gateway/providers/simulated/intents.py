"""How the simulated agent decides which functions a user message asks for, and with which arguments.

A real provider asks a language model. The simulated agent must be deterministic and offline, so it uses two
plain rules instead:

1. **Explicit syntax**, for tests: ``call NAME {"json": "object"}`` (or ``call NAME`` for no arguments)
   requests exactly that call, declared or not, as many times as it appears in the message.
2. **Keywords**, for demos: a declared function is called when a meaningful word of its name appears in the
   message ("weather" for ``get_weather``), with arguments picked out of the message using its JSON Schema.

Everything here is pure string work on the message and the declared function definitions (plain dicts, as
in ``Settings.agent.think.functions``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GENERIC_VERBS", "Intent", "derive_arguments", "explicit_calls", "find_calls", "natural_calls"]

_GENERIC_VERBS = "get set add list create update delete fetch lookup current make do run check"
GENERIC_VERBS = frozenset(_GENERIC_VERBS.split())
"""Words of a function name that say nothing about its topic: ``get_weather`` is about "weather", not "get"."""

LOCATION_PROPERTIES = ("location", "city", "place")
TEXT_PROPERTIES = ("text", "note", "content", "message", "body", "memo")

_EXPLICIT = re.compile(r"(?<![\w-])(?i:call)\s+([A-Za-z_][\w-]*)")
_PLACE = re.compile(r"(?<!\S)(?:in|for)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")
_TIMEZONE = re.compile(r"(?<![\w/])(?:[A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+|UTC|GMT)(?![\w/])")
_WORD = re.compile(r"[a-z0-9]+")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Intent:
    """One function call the agent decided to request."""

    name: str
    arguments: dict[str, Any]


def find_calls(text: str, functions: list[dict[str, Any]]) -> list[Intent]:
    """The calls a user message asks for: the explicit syntax when it is used, else keyword matching."""
    return explicit_calls(text, [f.get("name", "") for f in functions]) or natural_calls(text, functions)


def explicit_calls(text: str, declared: Iterable[str] = ()) -> list[Intent]:
    """Every ``call NAME {json}`` / ``call NAME`` in ``text``, in order.

    The JSON object is read with ``raw_decode``, so nested braces and strings containing braces work; an
    object that does not parse gives ``{}``. Without JSON, NAME must be declared or contain an underscore, so
    everyday speech ("call me later") does not become a call to a function named "me".
    """
    declared = set(declared)
    intents = []
    position = 0
    while match := _EXPLICIT.search(text, position):
        name = match.group(1).rstrip("-")
        position = match.end()
        rest = text[position:]
        start = len(rest) - len(rest.lstrip())
        arguments: dict[str, Any] | None = None
        if rest[start : start + 1] == "{":
            try:
                decoded, end = _DECODER.raw_decode(rest, start)
                position += end  # a "call x" inside the JSON arguments is not another call
            except ValueError:
                decoded = {}
            arguments = decoded if isinstance(decoded, dict) else {}
        elif name in declared or "_" in name:
            arguments = {}
        if arguments is not None:
            intents.append(Intent(name, arguments))
    return intents


def natural_calls(text: str, functions: list[dict[str, Any]]) -> list[Intent]:
    """Declared client-side functions whose topic word appears in ``text``, in declaration order.

    A topic word matches as itself or with an "s" ("note" matches "notes"). When several functions match
    the same word of the message (``add_note`` and ``list_notes`` on "list my notes"), only the best ones
    are kept: a function whose verb also appears ("list") beats one that does not, then an exact match
    beats a plural one.
    """
    words = set(_WORD.findall(text.lower()))
    matches: list[tuple[dict[str, Any], str, str, tuple[bool, bool]]] = []  # function, hit, keyword, score
    for function in functions:
        if function.get("endpoint"):
            continue  # the provider runs server-side functions itself; the client never sees them
        name_words = _name_words(str(function.get("name", "")))
        verbs = [w for w in name_words if w in GENERIC_VERBS]
        for keyword in (w for w in name_words if w not in GENERIC_VERBS):
            hit = keyword if keyword in words else keyword + "s" if keyword + "s" in words else None
            if hit:
                score = (any(v in words for v in verbs), hit == keyword)
                matches.append((function, hit, keyword, score))
                break
    best: dict[str, tuple[bool, bool]] = {}
    for _, hit, _, score in matches:
        best[hit] = max(score, best.get(hit, score))
    return [
        Intent(function["name"], derive_arguments(text, keyword, function.get("parameters") or {}))
        for function, hit, keyword, score in matches
        if score == best[hit]
    ]


def derive_arguments(text: str, keyword: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a call, found in the message by property name and schema; absent values are omitted.

    Like a real model, the agent may leave out arguments it has no value for (even required ones): the
    function's own validation then answers with a readable error, which is part of what tests exercise.
    """
    arguments: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        value = _value_for(name.lower(), prop if isinstance(prop, dict) else {}, text, keyword, schema)
        if value is not None:
            arguments[name] = value
    return arguments


def _value_for(name: str, prop: dict[str, Any], text: str, keyword: str, schema: dict[str, Any]) -> Any:
    enum = _enum_values(prop, schema)
    if enum:
        lower = text.lower()
        return next((v for v in enum if re.search(rf"(?<!\w){re.escape(str(v).lower())}(?!\w)", lower)), None)
    if not _accepts_string(prop, schema):
        return None
    if name in LOCATION_PROPERTIES or name.endswith(LOCATION_PROPERTIES):
        match = _PLACE.search(text)
        return match.group(1) if match else None
    if "timezone" in name or name in ("tz", "zone"):
        match = _TIMEZONE.search(text)
        return match.group(0) if match else None
    if name in TEXT_PROPERTIES:
        return _free_text(text, keyword)
    return None


def _free_text(text: str, keyword: str) -> str | None:
    """What follows "note:" (any "word:"), else what follows the function's keyword: "add a note: buy milk"."""
    _, colon, after = text.partition(":")
    if not colon:
        match = re.search(rf"(?i)(?<!\w){re.escape(keyword)}s?(?!\w)", text)
        after = text[match.end() :] if match else ""
    value = after.strip(" \t\n:,-").rstrip(".!?").strip()
    return value or None


def _name_words(name: str) -> list[str]:
    """``get_current_time`` → get, current, time; camelCase and dashes are split too."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[_\-.\s]+", spaced.lower()) if w]


def _resolve(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/Unit``), as pydantic writes for enums."""
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}
    return prop


def _variants(prop: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The property and, for ``anyOf``/``oneOf`` (e.g. an optional value), each alternative."""
    prop = _resolve(prop, schema)
    alternatives = [p for key in ("anyOf", "oneOf") for p in prop.get(key, []) if isinstance(p, dict)]
    return [prop, *(_resolve(p, schema) for p in alternatives)]


def _enum_values(prop: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    return [v for p in _variants(prop, schema) for v in p.get("enum", [])]


def _accepts_string(prop: dict[str, Any], schema: dict[str, Any]) -> bool:
    variants = _variants(prop, schema)
    types = [p.get("type") for p in variants if "type" in p]
    if not types:
        return True  # an untyped property takes anything
    return any(t == "string" or (isinstance(t, list) and "string" in t) for t in types)
