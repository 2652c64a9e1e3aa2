"""The test page (``GET /``) in headless Chromium, driven by Playwright, against the real processes.

The redis-server, workers and gateway fixtures are the integration tests' own, imported here. The browser is
Debian's Chromium (``/usr/bin/chromium``; ``make test`` installs it when root): Playwright cannot download its own
browsers here, so it is given the executable. Chromium's fake media devices stand in for a microphone: a
440 Hz sine from a WAV file this conftest writes.

Every test gets a fresh browser context and page, and leaves a screenshot of its last state in
``test-artifacts/<test name>.png`` at the repository root, passed or failed.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocket, sync_playwright

from tests.integration.conftest import gateway, logs_dir, redis_server, workers  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests and CI run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",  # no traffic beyond 127.0.0.1: the machine has no internet
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a permission prompt
    "--use-fake-device-for-media-stream",
]
TONE_HZ = 440
TONE_RATE = 48000


@pytest.fixture(scope="session")
def fake_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of a 440 Hz sine, 48 kHz mono PCM16: what Chromium's fake microphone captures, looped.

    48 kHz is not the page's declared 16 kHz, so the test sees whether the page resamples.
    """
    path = tmp_path_factory.mktemp("media") / "sine-440hz-48k.wav"
    samples = [round(0.5 * 32767 * math.sin(2 * math.pi * TONE_HZ * i / TONE_RATE)) for i in range(TONE_RATE)]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TONE_RATE)
        wav.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


@pytest.fixture(scope="package")
def browser(fake_microphone: Path) -> Iterator[Browser]:
    """One Chromium for the e2e tests. Package scope: it is gone before tests in other folders run."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"No Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test does it as root).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone}"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; uncaught JavaScript exceptions fail the test, and a screenshot is always saved."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    screenshot(page, request.node.name)
    context.close()
    assert not errors, f"uncaught JavaScript errors on the page: {errors}"


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/<name>.png``: what a person would have seen."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


@dataclass
class Frames:
    """Every frame of the page's WebSockets, as Playwright saw them on the wire (text: str, binary: bytes)."""

    sent: list[str | bytes] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def attach(self, ws: WebSocket) -> None:
        self.urls.append(ws.url)
        # Python functions, not bound builtins like list.append: Playwright wraps listeners it is given.
        ws.on("framesent", lambda payload: self.sent.append(payload))
        ws.on("framereceived", lambda payload: self.received.append(payload))

    def sent_messages(self) -> list[dict[str, Any]]:
        return _messages(self.sent)

    def received_messages(self) -> list[dict[str, Any]]:
        return _messages(self.received)

    def binary(self, direction: str, before: str = "") -> list[bytes]:
        """Binary frames ``sent`` or ``received``; with ``before``, only those ahead of that message type."""
        frames: list[str | bytes] = getattr(self, direction)
        if before:
            index = next(i for i, f in enumerate(frames) if isinstance(f, str) and json.loads(f)["type"] == before)
            frames = frames[:index]
        return [f for f in frames if isinstance(f, bytes)]

    def sync(self, page: Page, timeout: float = 5) -> dict[str, Any]:
        """Ask the simulated agent for its stats through the page's socket; return them once Playwright has
        reported both the request and the answer.

        Playwright reports frames asynchronously, possibly after the page's own calls return. Once it has
        reported this exchange, every frame before it is recorded too: call this before asserting on frames,
        or an assertion that something was *not* sent could pass only because it was not reported yet.
        """
        sent, received = len(self.sent), len(self.received)
        page.evaluate("vfg.send({type: 'SimulatedAgentStats'})")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            requested = any('"SimulatedAgentStats"' in f for f in self.sent[sent:] if isinstance(f, str))
            answers = [m for m in _messages(self.received[received:]) if m["type"] == "SimulatedAgentStats"]
            if requested and answers:
                return answers[0]
            page.wait_for_timeout(20)  # lets Playwright deliver pending events
        raise TimeoutError(f"no SimulatedAgentStats exchange on the page's socket within {timeout} s")


def _messages(frames: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in frames if isinstance(f, str)]


@pytest.fixture
def frames(page: Page) -> Frames:
    """Records the frames of every WebSocket the page opens from now on."""
    recorder = Frames()
    page.on("websocket", recorder.attach)
    return recorder
