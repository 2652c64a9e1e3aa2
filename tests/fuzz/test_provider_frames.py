"""Hostile provider frames: the gateway (PROVIDER=deepgram) reaches a provider that sends hypothesis-generated
frames (tests/fuzz/hostile_provider.py).

Each example is one session. The provider sends its frames, each followed by a marker the gateway relays as
is; everything the client receives between two markers is what the gateway made of one frame. An independent
model of the protocol (below) says what that must be:

- a frame the gateway does not act on reaches the client byte for byte (binary, non-JSON, other types,
  a malformed ``FunctionCallCancelled``);
- a ``FunctionCallRequest`` loses its backend-owned calls and its malformed elements (the client sees only its
  own well-formed calls, or nothing, and a Warning MALFORMED_FUNCTION_CALL when an element was malformed; one
  whose ``functions`` is not a list gives the Warning alone); every backend call, and every malformed element
  with a string id (unless it says ``client_side: false`` or a well-formed element has its id), gets exactly
  one ``FunctionCallResponse`` to the provider, a repeated call id none more, and that answer is its own (it fits the
  call's function and arguments: nothing wipes Redis between scripts, whose ids repeat across sessions, so
  another session's result would show);
- a ``History`` loses its entries for backend calls (by name, or by an id the backend took), and is not sent
  at all when none is left;
- a well-formed ``FunctionCallCancelled`` cancels backend calls (at most one answer, the one that may have been
  on its way) and the client sees only its own ids;
- the provider's way of ending the connection reaches the client: 1000/1001 as they are, anything else (or a
  cut connection) as an ``Error`` UPSTREAM_CLOSED and close code 1011.

What the provider received is what it recorded: the Settings it got define every backend function, and after them
it gets only the gateway's answers and KeepAlives. The gateway must not crash or log a traceback, and a canary
session on the same gateway (served by a well-behaved provider) keeps getting weather answers throughout.
"""

from __future__ import annotations

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
from websockets.sync.client import ClientConnection

from shared.protocol import MAX_NESTING, FunctionCall, FunctionCallCancelled
from shared.redis_server import RedisServer
from tests.fuzz.canary import Canary, ask_weather, open_session
from tests.fuzz.frames import ENDINGS, FUZZ_SETTINGS, Hostile, deeper_than, dumps, provider_frames
from tests.fuzz.hostile_provider import HostileProvider, check_settings, function_responses
from tests.support.client import SETTINGS
from tests.support.processes import Gateway, Process, http_get, running_gateway
from tests.support.reliability import Entry

pytestmark = pytest.mark.fuzz

SCRIPTS = 200
SCRIPT_SIZE = (10, 30)
MIN_FRAMES = 2_500
ANSWER_WAIT = 10.0
"""Seconds to wait for every backend call of a script to be answered (the slowest function here takes 5)."""
KEEPALIVE = '{"type":"KeepAlive"}'
"""What the gateway itself sends the provider while backend calls are pending."""
ASYNCHRONOUS = {"BackendFunctionCall", "TOO_MANY_PENDING_CALLS"}
"""What the gateway itself sends the client while calls run (a notice type, a Warning code): in any window."""


@pytest.fixture(scope="module")
def hostile_gateway(
    fuzz_redis: RedisServer, fuzz_workers: Process, fuzz_logs: Path, provider: HostileProvider
) -> Iterator[Gateway]:
    with running_gateway(
        fuzz_redis.url,
        fuzz_logs / "gw-provider-fuzz.log",
        PROVIDER="deepgram",
        DEEPGRAM_URL=provider.url,
        DEEPGRAM_API_KEY="hostile",
    ) as gateway:
        yield gateway


# --- the model of what the gateway must do --------------------------------------------------------------------


@dataclass
class Expect:
    """What the client must see for one provider frame."""

    relay: str | bytes | None = None
    """The frame itself, byte for byte."""
    client_ids: list[str] | None = None
    """A rewritten function message carrying only these (client-owned) call ids."""
    warning: bool = False
    """A Warning MALFORMED_FUNCTION_CALL comes with it (a malformed element in a FunctionCallRequest)."""
    history: list[Any] | None = None
    """A rewritten History carrying only these ``function_calls`` entries."""


@dataclass
class SessionModel:
    """The protocol's rules for one session, kept apart from the gateway's code (but for pydantic's schemas of
    the two function messages, which say what well-formed means)."""

    owned: set[str]
    taken: set[str] = field(default_factory=set)
    """Every call id the backend took in this session."""
    must_answer: dict[str, str] = field(default_factory=dict)
    """Backend calls owed exactly one answer: id → function name."""
    arguments: dict[str, str] = field(default_factory=dict)
    """The arguments each backend call was taken with: id → the arguments string."""
    malformed: set[str] = field(default_factory=set)
    """Ids of malformed elements: the gateway answers them with its own "malformed" error, not a worker's."""
    may_answer: set[str] = field(default_factory=set)
    """Backend calls cancelled after they started: an answer already on its way may still arrive, one at most."""

    def feed(self, frame: str | bytes) -> Expect:
        if isinstance(frame, bytes):
            return Expect(relay=frame)
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):
            return Expect(relay=frame)
        if not isinstance(data, dict) or deeper_than(data, MAX_NESTING):
            return Expect(relay=frame)  # not a message to act on (the nesting limit is the protocol's, too)
        kind = data.get("type")
        if kind == "FunctionCallRequest":
            return self._request(data, frame)
        if kind == "History" and "function_calls" in data:
            return self._history(data["function_calls"], frame)
        try:
            if kind == "FunctionCallCancelled":
                return self._cancelled(FunctionCallCancelled.model_validate(data), frame)
        except ValidationError:
            pass  # malformed: relayed as it is
        return Expect(relay=frame)

    def _request(self, data: dict[str, Any], frame: str) -> Expect:
        elements = data.get("functions")
        if not isinstance(elements, list):
            return Expect(warning=True)
        valid: list[FunctionCall] = []
        malformed: list[Any] = []
        for element in elements:
            try:
                valid.append(FunctionCall.model_validate(element))
            except ValidationError:
                malformed.append(element)
        backend = [f for f in valid if f.client_side and f.name in self.owned]
        rest = [f.id for f in valid if not (f.client_side and f.name in self.owned)]
        for call in backend:
            self._owe(call.id, call.name, call.arguments)
        valid_ids = {f.id for f in valid}
        for element in malformed:
            call_id = element.get("id") if isinstance(element, dict) else None
            if isinstance(call_id, str) and call_id not in valid_ids and element.get("client_side") is not False:
                name = element.get("name")
                if call_id not in self.taken:
                    self.malformed.add(call_id)
                self._owe(call_id, name if isinstance(name, str) else "")
        if not backend and not malformed:
            return Expect(relay=frame)
        return Expect(client_ids=rest or None, warning=bool(malformed))

    def _owe(self, call_id: str, name: str, arguments: str | None = None) -> None:
        if call_id not in self.taken:  # a repeated id is the same call: answered once in all
            self.taken.add(call_id)
            self.must_answer[call_id] = name
            if arguments is not None:
                self.arguments[call_id] = arguments

    def _backend_entry(self, entry: Any) -> bool:
        """A History entry is the backend's when its name is backend-owned or its id a call the backend took."""
        if not isinstance(entry, dict):
            return False
        name, call_id = entry.get("name"), entry.get("id")
        return (isinstance(name, str) and name in self.owned) or (isinstance(call_id, str) and call_id in self.taken)

    def _history(self, calls: Any, frame: str) -> Expect:
        if not isinstance(calls, list):
            return Expect()  # cannot be sorted: withheld
        kept = [entry for entry in calls if not self._backend_entry(entry)]
        if len(kept) == len(calls):
            return Expect(relay=frame)
        return Expect(history=kept or None)

    def _cancelled(self, message: FunctionCallCancelled, frame: str) -> Expect:
        ours = [f.id for f in message.functions if f.id in self.taken]
        if not ours:
            return Expect(relay=frame)
        for call_id in ours:
            if self.must_answer.pop(call_id, None) is not None:
                self.may_answer.add(call_id)
        rest = [f.id for f in message.functions if f.id not in self.taken]
        return Expect(client_ids=rest or None)


# --- driving a session ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    backend_calls: int = 0
    answered_once: int = 0
    cancelled_calls: int = 0
    cancelled_answered: int = 0
    answers_checked: int = 0
    sessions: int = 0

    @property
    def frames(self) -> int:
        return sum(self.sent.values())


def read_windows(ws: ClientConnection, count: int) -> list[list[Any]]:
    """What the client received, cut at each marker: ``windows[i]`` is what the gateway made of frame ``i``."""
    windows: list[list[Any]] = [[]]
    while len(windows) <= count:
        frame = ws.recv(timeout=30)
        if isinstance(frame, str) and frame.startswith('{"type": "FuzzMarker"'):
            windows.append([])
        else:
            windows[-1].append(frame)
    return windows[:count]


def relayed(window: list[Any]) -> list[Any]:
    """The window without the gateway's own asynchronous messages."""
    return [f for f in window if not (isinstance(f, str) and _kind(f) in ASYNCHRONOUS)]


def _kind(frame: str) -> Any:
    """A message's type, or for a Warning its code."""
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return data.get("code") if data.get("type") == "Warning" else data.get("type")


def check_window(hostile: Hostile, expect: Expect, window: list[Any], tally: Tally) -> None:
    got = relayed(window)
    warnings = [f for f in got if isinstance(f, str) and _kind(f) == "MALFORMED_FUNCTION_CALL"]
    got = [f for f in got if f not in warnings]
    assert len(warnings) == int(expect.warning), f"{hostile!r}: expected {int(expect.warning)} Warning, got {warnings}"
    if expect.warning:
        tally.seen["malformed elements: Warning to the client"] += 1
    if expect.history is not None:
        assert len(got) == 1, f"{hostile!r}: expected one rewritten History, got {_short(got)}"
        # Compared as JSON text: NaN is not equal to itself.
        assert dumps(json.loads(got[0])["function_calls"]) == dumps(expect.history), (hostile, got[0][:300])
        tally.seen["History without the backend's calls"] += 1
    elif expect.relay is not None:
        assert got == [expect.relay], f"{hostile!r} should reach the client as it is; got {_short(got)}"
        tally.seen["relayed byte for byte"] += 1
    elif expect.client_ids is None:
        assert got == [], f"{hostile!r}: all its calls are the backend's, yet the client got {_short(got)}"
        tally.seen["kept from the client (backend calls only)"] += 1
    else:
        assert len(got) == 1, f"{hostile!r}: expected one rewritten message, got {_short(got)}"
        message = json.loads(got[0])
        assert [f["id"] for f in message["functions"]] == expect.client_ids, (hostile, message)
        tally.seen["rewritten with the client's calls only"] += 1


def _short(frames: list[Any]) -> list[Any]:
    return [f[:200] if isinstance(f, str | bytes) else f for f in frames]


def expected_close(ending: str) -> tuple[int, bool]:
    """(close code the client gets, whether an Error UPSTREAM_CLOSED comes first) for a script's ending."""
    if ending in ("1000", "1001"):
        return int(ending), False
    return 1011, True


def fits(name: str, arguments: str, content: str) -> bool:
    """Whether ``content`` can be the answer to this very call: an error that names the function (every error the
    gateway or a worker writes does), or a result that echoes the call's own arguments.

    Scripts draw call ids from a small pool and nothing wipes Redis between them, so a later session reuses the
    ids of earlier ones. An answer that is really another session's result under the same id (a stored result or
    claim keyed by the provider's id alone) is, for another function or other arguments, one that does not fit.
    """
    try:
        data = json.loads(content)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    if "error" in data:
        return name in str(data["error"])
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        return False  # arguments that are not JSON can only get an error
    if not isinstance(args, dict):
        return False
    if name == "get_weather":
        return data.get("location") == args.get("location")
    if name == "get_current_time":
        return data.get("timezone") == args.get("timezone", "UTC")
    if name == "slow_echo":
        return data.get("echo") == args.get("text")
    if name == "list_notes":
        return isinstance(data.get("notes"), list)
    return False


def run_script(
    provider: HostileProvider,
    url: str,
    fuzz_id: int,
    frames: list[Hostile],
    ending: str,
    definitions: dict[str, dict[str, Any]],
    tally: Tally,
) -> None:
    provider.add(fuzz_id, [h.frame for h in frames], ending)
    model = SessionModel(set(definitions))
    expectations = [model.feed(h.frame) for h in frames]
    with open_session(url, {**SETTINGS, "fuzz_id": fuzz_id}) as ws:
        tally.sessions += 1
        check_settings(provider.settings(fuzz_id), definitions)
        windows = read_windows(ws, len(frames))
        for hostile, expect, window in zip(frames, expectations, windows, strict=True):
            tally.sent[hostile.kind] += 1
            check_window(hostile, expect, window, tally)

        # Every backend call answered, once; then the connection ends the way the script says.
        deadline = time.monotonic() + ANSWER_WAIT
        while time.monotonic() < deadline and not all(provider.answer_counts(fuzz_id)[i] for i in model.must_answer):
            time.sleep(0.02)
        time.sleep(0.05)  # room for a second, wrong answer to show up
        answers = provider.answer_counts(fuzz_id)
        names = {message["id"]: message["name"] for message in provider.responses(fuzz_id)}
        tally.backend_calls += len(model.must_answer) + len(model.may_answer)
        tally.answered_once += sum(1 for i in model.must_answer if answers[i] == 1)
        tally.cancelled_calls += len(model.may_answer)
        tally.cancelled_answered += sum(1 for i in model.may_answer if answers[i])
        contents = {message["id"]: message["content"] for message in provider.responses(fuzz_id)}
        for call_id, name in model.must_answer.items():
            assert answers[call_id] == 1, f"call {call_id[:40]!r} ({name}) answered {answers[call_id]} times"
            assert names[call_id] == name
            if call_id in model.malformed:
                assert "malformed" in contents[call_id], (
                    f"malformed element {call_id[:40]!r}: {contents[call_id][:200]}"
                )
                continue
            arguments = model.arguments[call_id]
            assert fits(name, arguments, contents[call_id]), (
                f"call {call_id[:40]!r} {name}({arguments[:80]}) got an answer that is not its own: "
                f"{contents[call_id][:200]}"
            )
        tally.answers_checked += len(model.must_answer)
        for call_id in model.may_answer:
            assert answers[call_id] <= 1, f"cancelled call {call_id[:40]!r} answered {answers[call_id]} times"
        strays = set(answers) - set(model.must_answer) - model.may_answer
        assert not strays, f"answers for calls the backend never took: {[s[:40] for s in strays]}"
        # The client sent nothing after its Settings: the provider got only the gateway's answers and KeepAlives.
        others = [f for f in provider.received(fuzz_id) if f != KEEPALIVE and not function_responses([f])]
        assert not others, f"the provider got frames nobody should have sent it: {_short(others)}"

        provider.finish(fuzz_id)
        if ending == "client":
            tally.endings["client left"] += 1
            return
        code, error_first = expected_close(ending)
        received = []  # after the last marker only the gateway speaks: notices, then the Error if any
        try:
            while True:
                received.append(ws.recv(timeout=10))
        except ConnectionClosed:
            pass
        got = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        errors = [json.loads(f)["code"] for f in received if isinstance(f, str) and _kind(f) == "Error"]
        tally.endings[f"provider {'cut the connection' if ending == 'abort' else f'closed {ending}'}: client got "
                      f"{'Error ' + errors[0] + ', ' if errors else ''}close {got}"] += 1  # fmt: skip
        assert got == code, f"provider ending {ending}: the client's session closed with {got}, expected {code}"
        assert errors == (["UPSTREAM_CLOSED"] if error_first else []), (ending, received)


# --- the test -------------------------------------------------------------------------------------------------


def test_hostile_provider_frames(
    hostile_gateway: Gateway,
    provider: HostileProvider,
    backend_definitions: dict[str, dict[str, Any]],
    reliability: Entry,
):
    """Malformed and hostile provider frames, and a canary session on the same gateway"""
    owned = set(json.loads(http_get(hostile_gateway.http + "/readyz")[1])["functions"])
    assert owned == set(backend_definitions), "the gateway and the workers' catalogs disagree"
    tally = Tally()
    scripts = iter(range(1_000_000))
    canary = Canary(hostile_gateway.url)
    canary.start()

    @settings(FUZZ_SETTINGS, max_examples=SCRIPTS)
    @given(st.lists(provider_frames(), min_size=SCRIPT_SIZE[0], max_size=SCRIPT_SIZE[1]), st.sampled_from(ENDINGS))
    def script(frames: list[Hostile], ending: str) -> None:
        # Nothing is wiped between scripts: call ids repeat across sessions, and each answer must still be its own.
        run_script(provider, hostile_gateway.url, next(scripts), frames, ending, backend_definitions, tally)

    try:
        script()
    finally:
        canary.stop()
    with open_session(hostile_gateway.url) as ws:
        canary_after = ask_weather(ws)

    log = hostile_gateway.log()
    reliability.tried = (
        f"{tally.frames} frames from a hostile provider over {tally.sessions} sessions: "
        + ", ".join(f"{n} {kind}" for kind, n in tally.sent.most_common())
        + "; sessions ended by: "
        + ", ".join(f"{n} {how}" for how, n in tally.endings.most_common())
    )
    reliability.happened = (
        "; ".join(f"{n} {what}" for what, n in tally.seen.most_common())
        + f". {tally.backend_calls} backend calls started: {tally.answered_once} answered exactly once "
        f"({tally.answers_checked} answers checked to fit their own call, with nothing wiped between sessions), "
        f"{tally.cancelled_calls} cancelled by the provider ({tally.cancelled_answered} of them had an answer "
        f"already on its way), none answered twice. Gateway alive: {hostile_gateway.popen.poll() is None}, "
        f"tracebacks in its log: {log.count('Traceback')}. Canary: {canary.completed} weather calls answered "
        f"during the fuzzing, {len(canary.failures)} failures, one more after it: {'ok' if canary_after else 'FAILED'}"
    )
    reliability.figures.update(
        frames=tally.frames,
        sessions=tally.sessions,
        frames_by_kind=dict(tally.sent.most_common()),
        what_the_client_saw=dict(tally.seen.most_common()),
        endings=dict(tally.endings.most_common()),
        backend_calls=tally.backend_calls,
        answered_exactly_once=tally.answered_once,
        answers_fitting_their_call=tally.answers_checked,
        cancelled=tally.cancelled_calls,
        cancelled_but_answered=tally.cancelled_answered,
        canary_calls=canary.completed,
        canary_failures=canary.failures,
        gateway_tracebacks=log.count("Traceback"),
    )

    assert tally.frames >= MIN_FRAMES
    assert hostile_gateway.popen.poll() is None, "the gateway died"
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    assert canary.completed >= 1 and not canary.failures, canary.failures
    assert canary_after


def test_call_id_reused_in_another_session(hostile_gateway: Gateway, provider: HostileProvider, reliability: Entry):
    """A provider reusing a call id in a later session (other arguments)"""
    call_id = f"reused-{time.time_ns()}"
    answers = {}
    for fuzz_id, city in ((-1, "Paris"), (-2, "Oslo")):
        arguments = json.dumps({"location": city})
        request = {
            "type": "FunctionCallRequest",
            "functions": [{"id": call_id, "name": "get_weather", "arguments": arguments}],
        }
        provider.add(fuzz_id, [json.dumps(request)], "client")
        with open_session(hostile_gateway.url, {**SETTINGS, "fuzz_id": fuzz_id}) as ws:
            read_windows(ws, 1)
            deadline = time.monotonic() + ANSWER_WAIT
            while time.monotonic() < deadline and not provider.answer_counts(fuzz_id)[call_id]:
                time.sleep(0.02)
            provider.finish(fuzz_id)
        answers[city] = next((m["content"] for m in provider.responses(fuzz_id) if m["id"] == call_id), None)
    second = json.loads(answers["Oslo"] or "{}")

    reliability.tried = (
        "the provider sends call id `reused-…` for get_weather(Paris) in one session, then the same id for "
        "get_weather(Oslo) in a later session"
    )
    reliability.happened = (
        f"the first session got weather for {json.loads(answers['Paris'] or '{}').get('location')}; the second got "
        f"{second.get('location') or second.get('error') or 'no answer'}"
        + ("" if second.get("location") == "Oslo" else ": another session's result (call ids are global in Redis)")
    )
    reliability.figures.update(first_answer=answers["Paris"], second_answer=answers["Oslo"])

    assert json.loads(answers["Paris"])["location"] == "Paris"
    assert second.get("location") == "Oslo", f"the second session got another session's result: {answers['Oslo']}"
