"""The gateway's test page in a real browser: conversation, backend calls, microphone, playback, demo functions,
errors. Each test loads ``GET /`` from a real gateway (simulated agent as provider, real workers and Redis) and
checks both what a person sees and what went over the page's WebSocket."""

from __future__ import annotations

import itertools
import json
import re
import secrets
import struct

import pytest
from playwright.sync_api import Page, expect

from shared.redis_server import RedisServer
from tests.e2e.conftest import Frames, screenshot
from tests.integration.conftest import CANARY, CANARY_FINGERPRINT
from tests.support.processes import Gateway, Process, live_workers

pytestmark = pytest.mark.e2e

INPUT_RATE = 16000
"""What the page declares in Settings (audio.input.sample_rate): 20 ms of PCM16 mono = 640 bytes."""
OUTPUT_RATE = 24000
"""What the page declares for the agent's speech: the simulated agent sends 20 ms = 960-byte frames."""


def open_page(page: Page, gateway: Gateway, demo: bool = False) -> None:
    """Load the test page from the gateway and connect, optionally with the demo option on."""
    page.goto(gateway.http + "/")
    expect(page.locator("#gateway-url")).to_have_value(gateway.url)  # the page found its own gateway
    if demo:
        page.get_by_label("Demo only: run client-side functions in the browser").check()
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_text("Connected")


def say(page: Page, text: str) -> None:
    page.locator("#say-text").fill(text)
    page.locator("#say-text").press("Enter")


def call_row(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#calls tr[data-name="{name}"]')


def dominant_frequency(pcm16: bytes, sample_rate: int) -> float:
    """Frequency of a pure tone from its zero crossings: two per period."""
    samples = struct.unpack(f"<{len(pcm16) // 2}h", pcm16)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / sample_rate)


def test_weather_question_runs_on_a_backend_worker(page: Page, frames: Frames, gateway: Gateway, redis_server):
    open_page(page, gateway)
    say(page, "What's the weather in Paris?")

    expect(page.locator("#conversation li.user")).to_contain_text("What's the weather in Paris?")
    answer = page.locator("#conversation li.assistant", has_text="get_weather returned")
    expect(answer).to_contain_text('"location": "Paris"')
    expect(answer).to_contain_text(CANARY_FINGERPRINT)  # computed by the worker from a key only it holds

    row = call_row(page, "get_weather")
    expect(row).to_have_attribute("data-status", "ok")
    expect(row).to_have_attribute("data-where", "backend")
    expect(row.locator("td.arguments")).to_contain_text('"location":"Paris"')
    expect(row.locator("td.time")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
    frames.sync(page)  # every frame so far is recorded
    [finished] = [m for m in frames.received_messages() if m.get("status") == "finished"]
    worker = finished["worker"]
    assert worker in {w["worker_id"] for w in live_workers(redis_server.url)}
    expect(row.locator("td.where")).to_have_text(f"backend worker {worker}")

    # The browser neither saw the call as a request nor answered it, and never saw the worker's secret.
    assert "FunctionCallResponse" not in [m["type"] for m in frames.sent_messages()]
    assert "FunctionCallRequest" not in [m["type"] for m in frames.received_messages()]
    assert not any(CANARY in f for f in frames.received if isinstance(f, str))


def test_microphone_audio_reaches_the_agent_and_agent_audio_plays(page: Page, frames: Frames, gateway: Gateway):
    open_page(page, gateway)
    mic = page.get_by_role("button", name="Start microphone")
    mic.click()
    expect(page.get_by_role("button", name="Stop microphone")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("vfg.audio.micSent.frames >= 25")  # half a second of audio
    page.get_by_role("button", name="Stop microphone").click()
    expect(mic).to_have_attribute("aria-pressed", "false")

    # Everything the page sent reached the provider, in the declared format: 20 ms frames of 16 kHz PCM16.
    stats = frames.sync(page)  # asked after the microphone stopped: no frame is still on its way
    sent = frames.binary("sent", before="SimulatedAgentStats")
    assert stats["audio_frames"] == len(sent) >= 25
    assert stats["audio_bytes"] == sum(map(len, sent)) == 640 * len(sent)
    # The fake microphone plays 440 Hz at 48 kHz: read as 16 kHz it must still be 440 Hz (48 kHz samples sent
    # as they are would read as 147 Hz). The first frames are skipped while the capture settles.
    frequency = dominant_frequency(b"".join(sent[10:]), INPUT_RATE)
    assert abs(frequency - 440) < 15, frequency

    # The agent's greeting was spoken: its frames (20 ms at 24 kHz) reached the page and were played to the end.
    received = frames.binary("received", before="SimulatedAgentStats")
    assert len(received) >= 10 and {len(f) for f in received} == {960}
    page.wait_for_function(f"vfg.audio.player.ended === {len(received)}")
    player = page.evaluate("({frames: vfg.audio.player.frames, state: vfg.audio.player.context.state})")
    assert player == {"frames": len(received), "state": "running"}
    expect(page.locator("#audio-stats")).to_contain_text(f"played at {OUTPUT_RATE} Hz")


def test_demo_option_runs_a_client_only_function_in_the_browser(page: Page, frames: Frames, gateway: Gateway):
    open_page(page, gateway, demo=True)
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    say(page, "Please toggle the theme")

    row = call_row(page, "toggle_theme")
    expect(row).to_have_attribute("data-status", "ok")
    expect(row).to_have_attribute("data-where", "browser-demo")
    expect(row.locator("td.where")).to_have_text("browser (demo)")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.locator("#conversation li.assistant", has_text="toggle_theme returned")).to_contain_text('"dark"')

    frames.sync(page)
    settings = frames.sent_messages()[0]
    assert settings["type"] == "Settings"
    assert [f["name"] for f in settings["agent"]["think"]["functions"]] == ["get_browser_time", "toggle_theme"]
    [response] = [m for m in frames.sent_messages() if m["type"] == "FunctionCallResponse"]
    assert response["name"] == "toggle_theme"
    assert json.loads(response["content"]) == {"theme": "dark"}


def test_without_the_demo_option_client_functions_are_not_executed(page: Page, frames: Frames, gateway: Gateway):
    open_page(page, gateway)
    say(page, "call toggle_theme")  # the simulated agent requests it even though the page did not declare it

    row = call_row(page, "toggle_theme")
    expect(row).to_have_attribute("data-where", "browser-not-executed")
    expect(row).to_have_attribute("data-status", "not-executed")
    expect(row.locator("td.where")).to_have_text("browser: not executed")
    answer = page.locator("#conversation li.assistant", has_text="toggle_theme returned")
    expect(answer).to_contain_text("not executed in the browser")  # answered, so the conversation goes on
    expect(page.locator("html")).to_have_attribute("data-theme", "light")

    frames.sync(page)
    assert "functions" not in frames.sent_messages()[0]["agent"]["think"]
    [response] = [m for m in frames.sent_messages() if m["type"] == "FunctionCallResponse"]
    assert "not executed in the browser" in json.loads(response["content"])["error"]


def test_errors_and_warnings_from_the_gateway_are_shown(page: Page, gateway: Gateway):
    open_page(page, gateway)
    page.evaluate("vfg.send({type: 'Settings'})")  # a second Settings is an error
    expect(page.locator(".notice.error")).to_contain_text("SETTINGS_ALREADY_APPLIED")
    page.evaluate("vfg.send({type: 'FunctionCallRequest', functions: []})")  # only a provider may send it
    expect(page.locator(".notice.warning")).to_contain_text("FUNCTION_REQUEST_REFUSED")
    expect(page.locator("#status")).to_have_text("Connected")  # neither ends the conversation


def test_a_stopped_gateway_is_reported_clearly(page: Page, redis_server: RedisServer, workers: Process, logs_dir):
    own = Gateway(redis_server.url, logs_dir / "e2e-stopped-gateway.log").wait_ready()
    try:
        open_page(page, own)
        assert own.stop() == 0, own.log()
        notice = page.locator(".notice.error")
        expect(notice).to_contain_text("The connection to the gateway closed (code 1001")
        expect(page.locator("#status")).to_have_text("Connection closed")
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
        screenshot(page, "test_a_stopped_gateway_is_reported_clearly-closed")

        page.get_by_role("button", name="Connect", exact=True).click()  # while nothing listens any more
        expect(notice).to_contain_text(f"Could not connect to the gateway at {own.url}")
        expect(page.locator("#status")).to_have_text("Connection failed")
    finally:
        own.stop()


def test_a_failed_backend_call_is_shown_with_its_error(page: Page, gateway: Gateway):
    open_page(page, gateway)
    say(page, 'call get_current_time {"timezone": "Mars/Olympus_Mons"}')

    row = call_row(page, "get_current_time")
    expect(row).to_have_attribute("data-status", "error")
    expect(row).to_have_attribute("data-where", "backend")
    expect(row.locator("td.status")).to_contain_text("Unknown timezone: Mars/Olympus_Mons")
    expect(page.locator("#conversation li.assistant", has_text="get_current_time returned")).to_contain_text(
        "Unknown timezone"
    )


def test_a_gateway_that_requires_a_token_is_reached_with_one(page: Page, redis_server: RedisServer, workers, logs_dir):
    token = "e2e-" + secrets.token_hex(8)
    own = Gateway(redis_server.url, logs_dir / "e2e-token-gateway.log", GATEWAY_TOKENS=token).wait_ready()
    try:
        page.goto(own.http + "/")
        connect = page.get_by_role("button", name="Connect", exact=True)
        connect.click()  # no token: the handshake is refused
        expect(page.locator(".notice.error")).to_contain_text(f"Could not connect to the gateway at {own.url}")

        page.get_by_label("Token").fill(token)  # sent as the subprotocol pair ["token", token]
        connect.click()
        expect(page.locator("#status")).to_have_text("Connected")
        expect(page.locator(".notice")).to_have_count(0)  # Connect clears the previous attempt's error
        say(page, "hello")
        expect(page.locator("#conversation li.assistant", has_text="You said: hello")).to_be_visible()
        page.get_by_role("button", name="Disconnect").click()
        expect(page.locator("#status")).to_have_text("Disconnected")
        expect(page.locator(".notice")).to_have_count(0)  # the person's own disconnect is no error
    finally:
        own.stop()
