"""Hostile client frames against a real gateway (UPSTREAM=simulated) over WebSockets.

Each example is one connection. After its Settings, a batch of hypothesis-generated frames is sent one at a
time, each followed by a marker (``SimulatedAgentStats``, which the simulated provider answers at once).
Everything the client receives before the marker's answer is the reaction to that frame, so every frame is
checked on its own:

- a frame the gateway must refuse (by the protocol rules, computed here independently) gets an Error or Warning
  with the documented code, and the session goes on;
- a frame the gateway must relay draws no refusal from the gateway (the provider may answer with its own error);
- no reaction anywhere carries an undocumented code, and the gateway never reports an internal error;
- an oversized frame at the end closes the session with 1009.

A separate test fuzzes the first frame of a connection (anything but a valid Settings is fatal: 1008).
Meanwhile a canary session on the same gateway keeps asking for the weather, and must keep getting it.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway.upstream.simulated import SimulatedUpstream
from shared.protocol import MAX_NESTING, ErrorCode, Settings, UpdateThink
from shared.redis_server import RedisServer
from tests.fuzz.canary import Canary, ask_weather, open_session
from tests.fuzz.frames import FUZZ_SETTINGS, MAX_FRAME, Hostile, client_frames, deeper_than, first_frames
from tests.support.processes import Gateway, Process, http_get
from tests.support.reliability import Entry

pytestmark = pytest.mark.fuzz

BATCHES = 450
BATCH_SIZE = (20, 30)
"""Small batches, many connections: hypothesis generates large examples slowly (and discards oversized ones)."""
FIRST_FRAMES = 400
MIN_MALFORMED = 10_000
MARKER = json.dumps({"type": "SimulatedAgentStats"})
GATEWAY_CODES = {v for k, v in vars(ErrorCode).items() if not k.startswith("_")}
PROVIDER_CODES = {"INVALID_MESSAGE", "UNEXPECTED_FUNCTION_CALL_RESPONSE", "SETTINGS_ALREADY_APPLIED"}
"""The simulated provider's own codes (gateway/simulated_agent.py), for frames the gateway relays to it."""
REFUSALS = {
    ErrorCode.SETTINGS_ALREADY_APPLIED,
    ErrorCode.FUNCTION_REQUEST_REFUSED,
    ErrorCode.FUNCTION_RESPONSE_REFUSED,
    ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS,
    ErrorCode.INVALID_SETTINGS,
    ErrorCode.INTERNAL_ERROR,
}
"""The gateway's refusals: a frame it relays must draw none of them (a relayed frame is never a Settings, so not
even the provider's own SETTINGS_ALREADY_APPLIED)."""
ASYNCHRONOUS = {ErrorCode.TOO_MANY_PENDING_CALLS, "UNEXPECTED_FUNCTION_CALL_RESPONSE"}
"""Reactions to a call a random message triggered, arriving whenever that call ends, in any window."""


@dataclass
class Tally:
    """What was sent and what came back, for the report."""

    sent: Counter[str] = field(default_factory=Counter)
    reactions: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    @property
    def malformed(self) -> int:
        return sum(n for kind, n in self.sent.items() if kind != "valid")


@pytest.fixture(scope="module")
def fuzz_gateway(fuzz_redis: RedisServer, fuzz_workers: Process, fuzz_logs: Path) -> Iterator[Gateway]:
    # The rate and size budgets are tested in tests/integration/test_limits.py; here every frame must reach the
    # gateway's parser, so none may be dropped for rate, bytes or size (huge strings are the point).
    budgets = {
        "CLIENT_MESSAGE_RATE": "1000000",
        "CLIENT_BYTE_RATE": str(1 << 40),
        "MAX_TEXT_FRAME_BYTES": str(MAX_FRAME),
    }
    gateway = Gateway(fuzz_redis.url, fuzz_logs / "gw-client-fuzz.log", **budgets).wait_ready()
    yield gateway
    assert gateway.stop() == 0, gateway.log()


# --- the oracle ---------------------------------------------------------------------------------------------


def parsed(frame: str) -> dict[str, Any] | None:
    """The frame as the protocol reads it: a JSON object with a string type, not nested too deep, no key twice
    in one object; else None."""
    duplicated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicated
        duplicated = duplicated or len({k for k, _ in items}) != len(items)
        return dict(items)

    try:
        data = json.loads(frame, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    if duplicated:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str) or deeper_than(data, MAX_NESTING):
        return None
    return data


def expected_refusal(frame: str | bytes, backend: set[str]) -> str | None:
    """The code the gateway must refuse this post-Settings frame with, or None when it must relay it."""
    if isinstance(frame, bytes):
        return None  # audio
    data = parsed(frame)
    if data is None:
        return ErrorCode.INVALID_MESSAGE
    kind = data["type"]
    if kind == "Settings":
        return ErrorCode.SETTINGS_ALREADY_APPLIED
    if kind == "FunctionCallRequest":
        return ErrorCode.FUNCTION_REQUEST_REFUSED
    if kind == "UpdateThink":  # merged with the backend's functions, so it must be well-formed
        try:
            UpdateThink.model_validate(data)
        except ValidationError:
            return ErrorCode.INVALID_MESSAGE
    if kind == "FunctionCallResponse":
        if not all(isinstance(data.get(k), str) for k in ("id", "name", "content")):
            return ErrorCode.INVALID_MESSAGE
        if data["name"] in backend:
            return ErrorCode.FUNCTION_RESPONSE_REFUSED
    return None


def expected_first(frame: str | bytes) -> tuple[str | None, int]:
    """(Error code, close code) for a connection's first frame; (None, 0) when Settings must be applied."""
    if len(frame if isinstance(frame, bytes) else frame.encode()) > MAX_FRAME:
        return None, 1009
    data = parsed(frame) if isinstance(frame, str) else None
    if data is None or data["type"] != "Settings":
        return ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS, 1008
    try:
        model = Settings.model_validate(data)  # the documented schema is the gateway's model of Settings
    except ValidationError:
        return ErrorCode.INVALID_SETTINGS, 1008
    if SimulatedUpstream.audio_support.problem(model.audio, "simulated"):  # formats the upstream cannot honour
        return ErrorCode.INVALID_SETTINGS, 1008
    return None, 0


# --- driving a connection -------------------------------------------------------------------------------------


def codes_in(window: list[Any]) -> list[str]:
    return [m.get("code") for m in window if isinstance(m, dict) and m.get("type") in ("Error", "Warning")]


def reaction(ws: ClientConnection, frame: str | bytes) -> list[Any]:
    """Send one frame and a marker; return everything received before the marker's answer.

    Lock-step, one frame at a time: the gateway's own refusals and what the provider says travel different
    paths (the provider's through its connection), so with frames in flight together a refusal of a later frame
    could overtake the provider's answer to an earlier one. Waiting for each marker keeps every reaction in
    the window of the frame that caused it.
    """
    ws.send(frame)
    ws.send(MARKER)
    window: list[Any] = []
    while True:
        received = ws.recv(timeout=30)
        message = json.loads(received) if isinstance(received, str) else received
        if isinstance(message, dict) and message.get("type") == "SimulatedAgentStats":
            return window
        window.append(message)


def close_code(ws: ClientConnection) -> int | None:
    """Wait for the gateway to close; the code of its close frame (None if the connection was just cut)."""
    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed:
        pass
    received = ws.protocol.close_rcvd
    return received.code if received else None


def run_batch(url: str, frames: list[Hostile], oversized: int, backend: set[str], tally: Tally) -> None:
    with open_session(url) as ws:
        tally.connections += 1
        for hostile in frames:
            window = reaction(ws, hostile.frame)
            codes = codes_in(window)
            refusal = expected_refusal(hostile.frame, backend)
            tally.sent[hostile.kind] += 1
            tally.reactions[f"refused: {refusal}" if refusal else "relayed to the provider"] += 1
            tally.reactions.update(f"provider answered {c}" for c in codes if not refusal and c not in ASYNCHRONOUS)
            assert all(c in GATEWAY_CODES | PROVIDER_CODES for c in codes), (hostile, window)
            assert ErrorCode.INTERNAL_ERROR not in codes, (hostile, window)
            if refusal:
                assert refusal in codes, f"expected {refusal} for {hostile!r}, got {window[:5]}"
            else:
                assert not set(codes) & REFUSALS, f"refused a frame it must relay: {hostile!r}: {window[:5]}"
        if oversized:
            with contextlib.suppress(ConnectionClosed, OSError):  # the gateway may close while it is being sent
                ws.send(b"\0" * oversized)
            code = close_code(ws)
            tally.sent["oversized frame"] += 1
            tally.closes[str(code)] += 1
            assert code == 1009, f"an oversized frame ({oversized} bytes) closed the session with {code}"


def run_first_frame(url: str, hostile: Hostile, tally: Tally) -> None:
    with connect(url, max_size=None, max_queue=None, open_timeout=10) as ws:
        tally.connections += 1
        assert json.loads(ws.recv(timeout=10))["type"] == "Welcome"
        code, close = expected_first(hostile.frame)
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send(hostile.frame)
        tally.sent["valid" if close == 0 else hostile.kind] += 1
        if close == 0:
            assert json.loads(ws.recv(timeout=10))["type"] == "SettingsApplied", hostile
            tally.reactions["Settings applied"] += 1
            return
        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(json.loads(ws.recv(timeout=10)))
        got = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        tally.closes[str(got)] += 1
        tally.reactions[f"refused: {code or 'too big'}, closed {got}"] += 1
        assert got == close, f"{hostile!r} closed the session with {got}, expected {close}"
        assert codes_in(received) == ([code] if code else []), f"{hostile!r}: {received}"


# --- the tests ----------------------------------------------------------------------------------------------------


def test_hostile_client_frames(fuzz_gateway: Gateway, reliability: Entry):
    """Malformed client frames after Settings, and a canary session on the same gateway"""
    backend = set(json.loads(http_get(fuzz_gateway.http + "/readyz")[1])["functions"])
    tally = Tally()
    canary = Canary(fuzz_gateway.url)
    canary.start()

    @settings(FUZZ_SETTINGS, max_examples=BATCHES)
    @given(
        st.lists(client_frames(), min_size=BATCH_SIZE[0], max_size=BATCH_SIZE[1]),
        st.one_of(st.just(0), st.just(0), st.just(0), st.integers(MAX_FRAME + 1, MAX_FRAME + 100_000)),
    )
    def batch(frames: list[Hostile], oversized: int) -> None:
        run_batch(fuzz_gateway.url, frames, oversized, backend, tally)

    try:
        batch()
    finally:
        canary.stop()
    with open_session(fuzz_gateway.url) as ws:
        canary_after = ask_weather(ws)
    _record(reliability, tally, canary, canary_after, fuzz_gateway, "after Settings")
    _assert_unharmed(tally, canary, canary_after, fuzz_gateway)
    assert tally.malformed >= MIN_MALFORMED, tally.sent


def test_hostile_first_frames(fuzz_gateway: Gateway, reliability: Entry):
    """Malformed first frames (before Settings), and a canary session on the same gateway"""
    tally = Tally()
    canary = Canary(fuzz_gateway.url)
    canary.start()

    @settings(FUZZ_SETTINGS, max_examples=FIRST_FRAMES)
    @given(first_frames())
    def first(hostile: Hostile) -> None:
        run_first_frame(fuzz_gateway.url, hostile, tally)

    try:
        first()
    finally:
        canary.stop()
    with open_session(fuzz_gateway.url) as ws:
        canary_after = ask_weather(ws)
    _record(reliability, tally, canary, canary_after, fuzz_gateway, "as the first frame")
    _assert_unharmed(tally, canary, canary_after, fuzz_gateway)
    assert tally.connections == FIRST_FRAMES


def _record(entry: Entry, tally: Tally, canary: Canary, after: bool, gateway: Gateway, where: str) -> None:
    log = gateway.log()
    entry.tried = (
        f"{tally.malformed} malformed frames {where} over {tally.connections} connections: "
        + ", ".join(f"{n} {kind}" for kind, n in tally.sent.most_common() if kind != "valid")
        + (f" (plus {tally.sent['valid']} valid ones mixed in)" if tally.sent["valid"] else "")
    )
    entry.happened = (
        "; ".join(f"{n} {reaction}" for reaction, n in tally.reactions.most_common())
        + (
            "; sessions closed: " + ", ".join(f"{n} with {code}" for code, n in tally.closes.most_common())
            if tally.closes
            else ""
        )
        + f". Gateway alive: {gateway.popen.poll() is None}, tracebacks in its log: {log.count('Traceback')}. "
        f"Canary: {canary.completed} weather calls answered during the fuzzing, {len(canary.failures)} failures, "
        f"one more after it: {'ok' if after else 'FAILED'}"
    )
    entry.figures.update(
        malformed_frames=tally.malformed,
        connections=tally.connections,
        frames_by_kind=dict(tally.sent.most_common()),
        reactions=dict(tally.reactions.most_common()),
        close_codes=dict(tally.closes.most_common()),
        canary_calls=canary.completed,
        canary_failures=canary.failures,
        canary_slowest_seconds=canary.slowest,
        gateway_tracebacks=log.count("Traceback"),
    )


def _assert_unharmed(tally: Tally, canary: Canary, after: bool, gateway: Gateway) -> None:
    log = gateway.log()
    assert gateway.popen.poll() is None, "the gateway died"
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    assert canary.completed >= 1 and not canary.failures, canary.failures
    assert after, "the canary's call after the fuzzing failed"
