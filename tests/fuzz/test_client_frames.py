"""Hostile client frames against a real gateway over WebSockets. Its provider (PROVIDER=deepgram) is the
simulated agent served by a recorder in this process (tests/fuzz/hostile_provider.py), so the oracle checks
what the provider actually received, not only what the client was told.

Each example is one connection. After its Settings, a batch of hypothesis-generated frames is sent one at a
time, each followed by a marker (``SimulatedAgentStats``, which the simulated provider answers at once).
Everything the client receives before the marker's answer is the reaction to that frame, and everything the
provider received before the marker is what the gateway passed on of it, so every frame is checked on its own:

- the Settings that reached the provider carry every backend function's definition;
- a frame the gateway must refuse (by the protocol rules, computed here independently) gets an Error or Warning
  with the documented code, never reaches the provider, and the session goes on;
- a frame the gateway must relay reaches the provider byte for byte and draws no refusal from the gateway (the
  provider may answer with its own error);
- besides the client's frames the provider gets only the gateway's own: a KeepAlive, or the one answer to a
  backend call it requested (so no client-forged FunctionCallResponse for a backend call ever reaches it);
- every backend call the provider requested gets exactly one FunctionCallResponse, with its id and name;
- no reaction anywhere carries an undocumented code, and the gateway never reports an internal error;
- an oversized frame at the end closes the session with 1009.

A separate test fuzzes the first frame of a connection (anything but a valid Settings is fatal: 1008, and then
nothing reaches the provider). Meanwhile a canary session on the same gateway keeps asking for the weather, and
must keep getting it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
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

from gateway.providers.base import DEEPGRAM_AUDIO
from shared.protocol import MAX_NESTING, ErrorCode, Settings, UpdateThink
from shared.redis_server import RedisServer
from tests.fuzz.canary import QUESTION, Canary, ask_weather, open_session
from tests.fuzz.frames import (
    BACKEND_CALL_ID,
    FUZZ_SETTINGS,
    MAX_FRAME,
    Hostile,
    client_frames,
    deeper_than,
    first_frames,
)
from tests.fuzz.hostile_provider import HostileProvider, check_settings, function_responses
from tests.support.client import SETTINGS
from tests.support.processes import Gateway, Process, http_get, running_gateway
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
"""The simulated provider's own codes (gateway/providers/simulated/agent.py), for frames the gateway relays to it."""
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
KEEPALIVE = '{"type":"KeepAlive"}'
"""What the gateway itself sends the provider while backend calls are pending (in any window)."""
ANSWER_WAIT = 15.0
"""Seconds to wait, at the end of a batch, for every backend call the provider requested to be answered."""


@dataclass
class Tally:
    """What was sent and what came back, for the report."""

    sent: Counter[str] = field(default_factory=Counter)
    reactions: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    provider_got: Counter[str] = field(default_factory=Counter)
    """What the provider received of the frames sent: ``relayed byte for byte`` or ``nothing``."""
    backend_calls: int = 0
    answered_once: int = 0
    cancelled: int = 0

    @property
    def malformed(self) -> int:
        return sum(n for kind, n in self.sent.items() if kind != "valid")


@pytest.fixture(scope="module")
def fuzz_gateway(
    fuzz_redis: RedisServer, fuzz_workers: Process, fuzz_logs: Path, provider: HostileProvider
) -> Iterator[Gateway]:
    # The rate and size budgets are tested in tests/integration/test_limits.py; here every frame must reach the
    # gateway's parser, so none may be dropped for rate, bytes or size (huge strings are the point).
    with running_gateway(
        fuzz_redis.url,
        fuzz_logs / "gw-client-fuzz.log",
        CLIENT_MESSAGE_RATE="1000000",
        CLIENT_BYTE_RATE=str(1 << 40),
        MAX_TEXT_FRAME_BYTES=str(MAX_FRAME),
        PROVIDER="deepgram",
        DEEPGRAM_URL=provider.url,
        DEEPGRAM_API_KEY="recorder",
    ) as gateway:
        yield gateway


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


def expected_refusal(frame: str | bytes, backend: set[str], backend_ids: set[str]) -> str | None:
    """The code the gateway must refuse this post-Settings frame with, or None when it must relay it.
    ``backend_ids``: the ids of the backend calls the provider has requested in this session so far."""
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
        call_id, name = data.get("id"), data.get("name")
        if not isinstance(call_id, str) or not call_id:
            return ErrorCode.INVALID_MESSAGE  # nothing to answer
        if (isinstance(name, str) and name in backend) or call_id in backend_ids:
            return ErrorCode.FUNCTION_RESPONSE_REFUSED
        if not (isinstance(name, str) and isinstance(data.get("content"), str)):
            return ErrorCode.INVALID_MESSAGE  # and the call is answered with an error (see error_answer_for)
    return None


def error_answer_for(frame: str | bytes, refusal: str | None) -> str | None:
    """The call id the gateway must answer with an error in the client's place: a refused client answer that
    names a call (a string id) but is malformed, so that the call never hangs."""
    data = parsed(frame) if isinstance(frame, str) else None
    if refusal != ErrorCode.INVALID_MESSAGE or data is None or data["type"] != "FunctionCallResponse":
        return None
    call_id = data.get("id")
    return call_id if isinstance(call_id, str) and call_id else None


def check_merged_think(message: dict[str, Any], definitions: dict[str, dict[str, Any]]) -> None:
    """An UpdateThink as the provider got it: every backend function once, exactly as its worker defines it
    (nothing of the client's for that name: no ``endpoint``, ``client_side`` or description of its own)."""
    think = message.get("think")
    for entry in think if isinstance(think, list) else [think]:  # a list of fallback providers: each merged
        functions = (entry or {}).get("functions") or []
        for name, definition in definitions.items():
            mine = [f for f in functions if isinstance(f, dict) and f.get("name") == name]
            assert mine == [definition], f"UpdateThink reached the provider with {name} as {mine}, not {definition}"


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
    if DEEPGRAM_AUDIO.problem(model.audio, "deepgram"):  # formats the provider cannot honour
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


@dataclass
class ProviderSide:
    """What the recording provider got on one session, read one marker-delimited window at a time."""

    provider: HostileProvider
    fuzz_id: int
    backend: set[str]
    cursor: int = 0

    def window(self) -> list[str | bytes]:
        """The frames the provider received since the previous marker, without this one. The provider records a
        frame before answering it, so once the client has the marker's answer the marker is recorded."""
        received = self.provider.received(self.fuzz_id)
        try:
            end = received.index(MARKER, self.cursor)
        except ValueError:
            got = _short(received[self.cursor :][:5])
            raise AssertionError(f"the marker never reached the provider; it got {got}") from None
        window, self.cursor = received[self.cursor : end], end + 1
        return window

    def requested(self) -> tuple[dict[str, str], set[str]]:
        """(backend call id → name, ids it cancelled) for the calls the provider asked for so far."""
        calls: dict[str, str] = {}
        cancelled: set[str] = set()
        for frame in self.provider.sent(self.fuzz_id):
            message = json.loads(frame)
            if message.get("type") == "FunctionCallRequest":
                ours = [f for f in message["functions"] if f.get("client_side") and f["name"] in self.backend]
                calls.update((f["id"], f["name"]) for f in ours)
            elif message.get("type") == "FunctionCallCancelled":
                cancelled.update(f["id"] for f in message["functions"])
        return calls, cancelled


def check_upstream(
    hostile: Hostile,
    refusal: str | None,
    window: list[str | bytes],
    calls: dict[str, str],
    definitions: dict[str, dict[str, Any]],
) -> str:
    """The frame reached the provider byte for byte (relayed), merged (an UpdateThink), or not at all (refused),
    and nothing else but the gateway's own frames did. Returns what the provider got, for the tally."""
    rest = list(window)
    data = parsed(hostile.frame) if isinstance(hostile.frame, str) else None
    if refusal is None and data is not None and data["type"] == "UpdateThink":
        merged = [f for f in rest if isinstance(f, str) and (parsed(f) or {}).get("type") == "UpdateThink"]
        assert len(merged) == 1, f"{hostile!r} was to be merged and relayed; the provider got {_short(window)}"
        check_merged_think(json.loads(merged[0]), definitions)
        rest.remove(merged[0])
        strays = [f for f in rest if not _gateway_own(f, calls)]
        assert not strays, f"after {hostile!r} the provider also got {_short(strays)}"
        return "merged with the backend's functions"
    answer_id = error_answer_for(hostile.frame, refusal)
    if answer_id is not None:
        answers = [
            f
            for f in rest
            if isinstance(f, str)
            and (message := parsed(f)) is not None
            and message["type"] == "FunctionCallResponse"
            and message.get("id") == answer_id
            and "error" in json.loads(message.get("content") or "{}")
        ]
        assert len(answers) == 1, f"{hostile!r}: its call was to be answered with an error; got {_short(window)}"
        rest.remove(answers[0])
        strays = [f for f in rest if not _gateway_own(f, calls)]
        assert not strays, f"after {hostile!r} the provider also got {_short(strays)}"
        return "an error answer for its call"
    if refusal is None:
        assert hostile.frame in rest, f"{hostile!r} was to be relayed; the provider got {_short(window)}"
        rest.remove(hostile.frame)
    else:
        assert hostile.frame not in rest, f"{hostile!r} was refused ({refusal}), yet it reached the provider"
    strays = [f for f in rest if not _gateway_own(f, calls)]
    assert not strays, f"after {hostile!r} the provider also got {_short(strays)}"
    return "relayed byte for byte" if refusal is None else "nothing"


def _gateway_own(frame: str | bytes, calls: dict[str, str]) -> bool:
    """A frame the gateway sends of its own accord: a KeepAlive, or an answer to a backend call the provider
    requested (how many of those each call gets is checked at the end of the session)."""
    if frame == KEEPALIVE:
        return True
    responses = function_responses([frame])
    return len(responses) == 1 and responses[0].get("id") in calls


def _short(frames: list[Any]) -> list[Any]:
    return [f[:200] if isinstance(f, str | bytes) else f for f in frames]


def check_answers(side: ProviderSide, tally: Tally) -> None:
    """Every backend call the provider requested got exactly one FunctionCallResponse, with its id and name; a
    call the provider cancelled got one at most."""
    deadline = time.monotonic() + ANSWER_WAIT
    while True:
        calls, cancelled = side.requested()
        answers = Counter(m.get("id") for m in side.provider.responses(side.fuzz_id))
        owed = {i for i in calls if i not in cancelled}
        if all(answers[i] for i in owed) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if calls:
        time.sleep(0.05)  # room for a second, wrong answer to show up
    responses = [m for m in side.provider.responses(side.fuzz_id) if m.get("id") in calls]
    answers = Counter(m["id"] for m in responses)
    tally.backend_calls += len(calls)
    tally.answered_once += sum(1 for i in calls if answers[i] == 1)
    tally.cancelled += len(cancelled & set(calls))
    for call_id in owed:
        assert answers[call_id] == 1, f"backend call {call_id} ({calls[call_id]}) answered {answers[call_id]} times"
    for call_id in cancelled & set(calls):
        assert answers[call_id] <= 1, f"cancelled backend call {call_id} answered {answers[call_id]} times"
    for message in responses:
        assert message.get("name") == calls[message["id"]], f"answer under another name: {message}"


def run_batch(
    url: str,
    side: ProviderSide,
    frames: list[Hostile],
    oversized: int,
    definitions: dict[str, dict[str, Any]],
    tally: Tally,
) -> None:
    side.provider.record(side.fuzz_id)
    try:
        with open_session(url, {**SETTINGS, "fuzz_id": side.fuzz_id}) as ws:
            tally.connections += 1
            check_settings(side.provider.settings(side.fuzz_id), definitions)
            # A real backend call first, so the frames can try to answer it (see frames.BACKEND_CALL_ID).
            question = Hostile("question", json.dumps({"type": "InjectUserMessage", "content": QUESTION}))
            reaction(ws, question.frame)
            check_upstream(question, None, side.window(), {}, definitions)
            backend_call = next(iter(side.requested()[0]), None)
            assert backend_call, "the weather question led to no backend call"
            for hostile in frames:
                if isinstance(hostile.frame, str) and BACKEND_CALL_ID in hostile.frame:
                    hostile = Hostile(hostile.kind, hostile.frame.replace(BACKEND_CALL_ID, backend_call))
                refusal = expected_refusal(hostile.frame, side.backend, set(side.requested()[0]))
                window = reaction(ws, hostile.frame)
                codes = codes_in(window)
                calls = side.requested()[0]  # as of the marker: the gateway took them before relaying its answer
                tally.sent[hostile.kind] += 1
                tally.reactions[f"refused: {refusal}" if refusal else "relayed to the provider"] += 1
                tally.reactions.update(f"provider answered {c}" for c in codes if not refusal and c not in ASYNCHRONOUS)
                assert all(c in GATEWAY_CODES | PROVIDER_CODES for c in codes), (hostile, window)
                assert ErrorCode.INTERNAL_ERROR not in codes, (hostile, window)
                if refusal:
                    assert refusal in codes, f"expected {refusal} for {hostile!r}, got {window[:5]}"
                else:
                    assert not set(codes) & REFUSALS, f"refused a frame it must relay: {hostile!r}: {window[:5]}"
                tally.provider_got[check_upstream(hostile, refusal, side.window(), calls, definitions)] += 1
            check_answers(side, tally)
            if oversized:
                with contextlib.suppress(ConnectionClosed, OSError):  # the gateway may close while it is being sent
                    ws.send(b"\0" * oversized)
                code = close_code(ws)
                tally.sent["oversized frame"] += 1
                tally.closes[str(code)] += 1
                assert code == 1009, f"an oversized frame ({oversized} bytes) closed the session with {code}"
                big = [f for f in side.provider.received(side.fuzz_id) if len(f) >= oversized]
                assert not big, "the oversized frame reached the provider"
    finally:
        side.provider.forget(side.fuzz_id)


def run_first_frame(url: str, hostile: Hostile, tally: Tally) -> None:
    with connect(url, max_size=None, max_queue=None, open_timeout=10) as ws:
        tally.connections += 1
        assert json.loads(ws.recv(timeout=10))["type"] == "Conversation"  # the gateway's own, first
        assert json.loads(ws.recv(timeout=10))["type"] == "Welcome"
        code, close = expected_first(hostile.frame)
        with contextlib.suppress(ConnectionClosed, OSError):
            ws.send(hostile.frame)
        tally.sent["valid" if close == 0 else hostile.kind] += 1
        if close == 0:
            reply = json.loads(ws.recv(timeout=10))
            if reply.get("code") == ErrorCode.STORED_AGENT:  # a stored agent's id: relayed, with a Warning first
                tally.reactions["Warning STORED_AGENT"] += 1
                reply = json.loads(ws.recv(timeout=10))
            assert reply["type"] == "SettingsApplied", hostile
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


def test_hostile_client_frames(
    fuzz_gateway: Gateway,
    provider: HostileProvider,
    backend_definitions: dict[str, dict[str, Any]],
    reliability: Entry,
):
    """Malformed client frames after Settings, and a canary session on the same gateway"""
    backend = set(json.loads(http_get(fuzz_gateway.http + "/readyz")[1])["functions"])
    assert backend == set(backend_definitions), "the gateway and the workers' catalogs disagree"
    fuzz_ids = itertools.count(1)
    tally = Tally()
    canary = Canary(fuzz_gateway.url)
    canary.start()

    @settings(FUZZ_SETTINGS, max_examples=BATCHES)
    @given(
        st.lists(client_frames(), min_size=BATCH_SIZE[0], max_size=BATCH_SIZE[1]),
        st.one_of(st.just(0), st.just(0), st.just(0), st.integers(MAX_FRAME + 1, MAX_FRAME + 100_000)),
    )
    def batch(frames: list[Hostile], oversized: int) -> None:
        side = ProviderSide(provider, next(fuzz_ids), backend)
        run_batch(fuzz_gateway.url, side, frames, oversized, backend_definitions, tally)

    try:
        batch()
    finally:
        canary.stop()
    with open_session(fuzz_gateway.url) as ws:
        canary_after = ask_weather(ws)
    _record(reliability, tally, canary, canary_after, fuzz_gateway, "after Settings")
    _assert_unharmed(tally, canary, canary_after, fuzz_gateway)
    assert tally.malformed >= MIN_MALFORMED, tally.sent


def test_hostile_first_frames(
    fuzz_gateway: Gateway,
    provider: HostileProvider,
    backend_definitions: dict[str, dict[str, Any]],
    reliability: Entry,
):
    """Malformed first frames (before Settings), and a canary session on the same gateway"""
    tally = Tally()
    before = len(provider.first_frames)
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
    # What reached the provider first, on every connection since the test began: the canary's two sessions and
    # one per valid Settings, each a Settings defining the backend functions; a refused first frame, nothing.
    reached = provider.first_frames[before:]
    tally.provider_got["a valid Settings"] = len(reached)
    _record(reliability, tally, canary, canary_after, fuzz_gateway, "as the first frame")
    for first in reached:
        check_settings(first, backend_definitions)
    assert len(reached) == tally.sent["valid"] + 2, f"{len(reached)} first frames reached the provider"
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
        + (
            ". The provider got: " + ", ".join(f"{n} {what}" for what, n in tally.provider_got.most_common())
            if tally.provider_got
            else ""
        )
        + (
            f"; {tally.backend_calls} backend calls it requested: {tally.answered_once} answered exactly once, "
            f"{tally.cancelled} cancelled by the provider (barge-in), none answered twice"
            if tally.backend_calls
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
        provider_got=dict(tally.provider_got.most_common()),
        backend_calls=tally.backend_calls,
        backend_calls_answered_once=tally.answered_once,
        backend_calls_cancelled=tally.cancelled,
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
