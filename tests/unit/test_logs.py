"""One logging setup for every process (shared/logs.py): URL passwords and secrets never reach a log line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from shared.config import Config
from shared.logs import MASK, RedactingFormatter, masking, redacted, secret_values, setup_logging


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:hunter22@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://app:p%40ss@db/1 and more", "rediss://app:***@db/1 and more"),
        ("Redis at redis://127.0.0.1:6379/0", "Redis at redis://127.0.0.1:6379/0"),  # a port is not a password
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_url_passwords_are_masked(text: str, shown: str) -> None:
    assert redacted(text) == shown


def test_the_formatter_masks_the_whole_record_traceback_included() -> None:
    formatter = RedactingFormatter("%(message)s", masking(["sk-live-123456"]))
    try:
        raise RuntimeError("key sk-live-123456 refused")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "at %s", ("redis://:pw12@h",), sys.exc_info())
    line = formatter.format(record)
    assert "sk-live-123456" not in line and "pw12" not in line
    assert f"redis://:{MASK}@h" in line and "RuntimeError" in line


def test_short_values_are_not_masked() -> None:
    assert masking(["abc", "abcdef"])("abc abcdef") == f"abc {MASK}"


def test_the_gateways_secret_settings_are_its_secrets() -> None:
    config = Config(gateway_tokens=SecretStr("alice:tok-alice-1,tok-bare-2"), deepgram_api_key=SecretStr("dg-key-9"))
    values = set(secret_values(config))
    assert {"tok-alice-1", "tok-bare-2", "dg-key-9"} <= values
    assert masking(values)("token tok-alice-1 and dg-key-9") == f"token {MASK} and {MASK}"


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_setup_replaces_handlers_and_quiets_websockets(root_logging: None, capsys: pytest.CaptureFixture) -> None:
    setup_logging("info", "%(levelname)s %(message)s", masking(["s3cr3t-value"]))
    root = logging.getLogger()
    assert len(root.handlers) == 1 and root.level == logging.INFO
    assert logging.getLogger("websockets").level == logging.WARNING
    logging.getLogger("t").info("using s3cr3t-value at redis://u:pw99@h")
    assert capsys.readouterr().err.strip() == f"INFO using {MASK} at redis://u:{MASK}@h"
