"""Logging setup for every process (gateway, workers, supervisors), with secrets kept out of log lines.

One format per process kind, one handler on stderr, and one formatter that masks, in the whole formatted
record (traceback included): the password of any URL (``redis://user:***@host``) and whatever else the process
calls secret (a worker's function keys, a gateway's tokens and provider keys).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable

from pydantic import SecretStr

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: replacing every "abc" in every line would destroy logs and hide nothing."""
QUIET_LOGGERS = ("websockets",)
"""Libraries whose INFO lines (one per connection) drown the process's own; they log from WARNING."""

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)

Redactor = Callable[[str], str]


def redacted(text: str) -> str:
    """``text`` with the password of every URL in it masked: ``redis://:secret@host`` -> ``redis://:***@host``."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def masking(values: Iterable[str]) -> Redactor:
    """A redactor that masks each of ``values`` (longest first, so one that contains another is masked whole)."""
    kept = sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def redact(text: str) -> str:
        for value in kept:
            if value in text:
                text = text.replace(value, MASK)
        return text

    return redact


def secret_values(settings: object) -> list[str]:
    """The secret settings of ``settings`` (a pydantic model): every ``SecretStr`` field's value, and each
    comma-separated part of it and its token after a ``name:`` prefix (``GATEWAY_TOKENS=alice:t1,t2``)."""
    values: list[str] = []
    for name in type(settings).model_fields:  # type: ignore[attr-defined]
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            parts = [part.strip() for part in raw.split(",")]
            values += [raw, *parts, *(part.split(":", 1)[1] for part in parts if ":" in part)]
    return values


class RedactingFormatter(logging.Formatter):
    """A formatter that masks URL passwords and ``redact``'s secrets in the whole formatted record."""

    def __init__(self, fmt: str, redact: Redactor | None = None) -> None:
        super().__init__(fmt)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        text = redacted(super().format(record))
        return self._redact(text) if self._redact is not None else text


def setup_logging(level: str, fmt: str, redact: Redactor | None = None) -> None:
    """Log lines on stderr in ``fmt``, secrets masked; replaces any handler set before (one setup per process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
