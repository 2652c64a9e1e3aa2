"""Worker-only secrets, and the redaction that keeps them inside the worker.

Functions read their API keys with :func:`secret` instead of ``os.environ``: the value is remembered, and
:func:`redact` masks every remembered value. The worker passes every result content, every error message and
every log line through :func:`redact`, so a key that ends up in an exception text or a careless return value
never reaches Redis, the gateway, the LLM or the log.

Only values actually read from the environment are remembered, not defaults: a default such as ``"demo"`` is
public by definition, and masking it would mangle ordinary words in results.
"""

from __future__ import annotations

import json
import os
import threading

MASK = "***"
MIN_LENGTH = 4
"""Shorter values are not masked: replacing every "abc" in every text would destroy results and hide nothing."""

_lock = threading.Lock()
_remembered: set[str] = set()
_variants: tuple[str, ...] = ()
"""Strings to mask, longest first: each secret raw and as it appears inside a JSON string (escaped)."""


class MissingSecret(RuntimeError):
    """A function needs an environment variable that the worker process does not have."""


def secret(name: str, default: str | None = None) -> str:
    """The value of environment variable ``name`` in this worker process, remembered for :func:`redact`.

    Raises :class:`MissingSecret` when the variable is unset and there is no default. Reading the environment
    on each call (not once at import) lets a test or a deploy change a key without restarting imports.
    """
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise MissingSecret(f"environment variable {name} is not set in the worker")
        return default
    remember(value)
    return value


def remember(value: str) -> None:
    """Mask ``value`` from now on (for secrets that do not come from the environment, e.g. a vault)."""
    global _variants
    if len(value) < MIN_LENGTH or value in _remembered:
        return
    with _lock:
        _remembered.add(value)
        variants = set(_remembered)
        variants.update(json.dumps(v)[1:-1] for v in _remembered)  # the form a secret takes inside JSON text
        _variants = tuple(sorted(variants, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every remembered secret value replaced by ``***``."""
    for value in _variants:
        if value in text:
            text = text.replace(value, MASK)
    return text


def forget_all() -> None:
    """Forget every remembered value (for tests)."""
    global _variants
    with _lock:
        _remembered.clear()
        _variants = ()
