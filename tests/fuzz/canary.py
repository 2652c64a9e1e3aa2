"""A well-behaved session on the gateway under fuzzing: it asks for the weather over and over, and must keep
getting answers from a backend worker while other sessions throw garbage at the same gateway process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.client import SETTINGS

QUESTION = "What's the weather in Paris?"


def ask_weather(ws: ClientConnection, timeout: float = 10) -> bool:
    """One question; True when the agent's answer quotes a successful get_weather result for Paris."""
    ws.send(json.dumps({"type": "InjectUserMessage", "content": QUESTION}))
    deadline = time.monotonic() + timeout
    while True:
        frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            continue
        message = json.loads(frame)
        if message.get("type") == "ConversationText" and message.get("role") == "assistant":
            content = str(message.get("content"))
            return "get_weather returned" in content and "Paris" in content and '"error"' not in content


@contextmanager
def open_session(url: str, settings: dict[str, Any] | None = None) -> Iterator[ClientConnection]:
    """A connection to the gateway whose Settings (``settings``, or the tests' usual ones) were applied."""
    # No flow control on what is received (max_queue=None): the fuzz tests send whole batches before reading,
    # and a full receive queue would stop the gateway, which would stop reading what they send.
    with connect(url, max_size=None, max_queue=None, open_timeout=10) as ws:
        ws.send(json.dumps(settings or SETTINGS))
        while True:
            frame = ws.recv(timeout=10)
            if isinstance(frame, str) and json.loads(frame).get("type") == "SettingsApplied":
                break
        yield ws


class Canary(threading.Thread):
    """Asks the weather question every ``pause`` seconds until stopped; counts answers and failures."""

    def __init__(self, url: str, pause: float = 0.3) -> None:
        super().__init__(name="canary", daemon=True)
        self.url = url
        self.pause = pause
        self.completed = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with open_session(self.url) as ws:
                while not self._stop_event.is_set():
                    started = time.monotonic()
                    if ask_weather(ws):
                        self.completed += 1
                    else:
                        self.failures.append("an answer without the weather")
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self._stop_event.wait(self.pause)
        except Exception as exc:  # any failure is the canary's finding, reported by the test
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)
