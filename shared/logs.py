"""Logging setup for every process (gateway, workers, supervisors), with secrets kept out of log lines.

One format per process kind, one handler on stderr, and one formatter that masks, in the whole formatted
record (traceback included): the password of any URL (``redis://user:***@host``) and whatever else the process
calls secret (a worker's function keys, a gateway's tokens and provider keys).

``LOG_FORMAT=json`` makes every line one JSON object: ``ts``, ``level``, ``logger``, ``message``, the fields of
the current :func:`log_context` (``session_id``, ``call_id``, ``function``, ``worker_id``, ``traceparent``...),
a record's ``extra`` fields (``duration_ms``) and ``exception``; every string value masked as text lines are.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: replacing every "abc" in every line would destroy logs and hide nothing."""
QUIET_LOGGERS = ("websockets",)
"""Libraries whose INFO lines (one per connection) drown the process's own; they log from WARNING."""
LIBRARY_LOGGERS = ("rq", "rq.worker", "websockets")
"""Libraries that may install handlers of their own (RQ does, when none is effective): theirs are removed so
their lines take the process's format (JSON lines stay JSON)."""
LogFormat = Literal["text", "json"]

_context: ContextVar[dict[str, Any]] = ContextVar("log_context", default={})  # noqa: B039 - never mutated
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

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


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (``session_id=...``, ``call_id=...``) to every JSON line logged inside the block, in this
    task or thread and the tasks it creates (a context variable: each asyncio task and each thread has its own).
    Empty values (``""``, None) are left out."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v not in ("", None)}})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    """The fields :func:`log_context` set here (a copy)."""
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring); every string in it masked."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact

    def _mask(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = redacted(value)
        return self._redact(text) if self._redact is not None else text

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            **_context.get(),
        }
        entry.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_FIELDS and not k.startswith("_"))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps({k: self._mask(v) for k, v in entry.items()}, default=lambda v: self._mask(str(v)))


def setup_logging(level: str, fmt: str, redact: Redactor | None = None, log_format: LogFormat = "text") -> None:
    """Log lines on stderr in ``fmt`` (or JSON objects when ``log_format`` is ``"json"``), secrets masked;
    replaces any handler set before (one setup per process), libraries' own handlers included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else RedactingFormatter(fmt, redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
