"""The example functions, executed the way a worker runs them (through ``execute``), on fakeredis."""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

import workers.examples as examples
from shared import keys
from shared.envelopes import CallJob, CallResult
from workers.execute import execute
from workers.secrets import forget_all

KEY = "demo-unit-4b9c2e"


@pytest.fixture(autouse=True)
def clean_secrets() -> Iterator[None]:
    yield
    forget_all()


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def call(name: str, redis: Any = None, principal: str = "", **arguments: Any) -> CallResult:
    job = CallJob(
        call_id="c1",
        name=name,
        arguments=json.dumps(arguments),
        reply_channel=keys.reply_channel("gw"),
        deadline=time.time() + 10,
        principal=principal,
    )
    return execute(job, redis, "w-test")


def content(result: CallResult) -> Any:
    assert result.ok, result.content
    return json.loads(result.content)


# --- time -------------------------------------------------------------------------------------------------


def test_time_in_utc_by_default():
    data = content(call("get_current_time"))
    assert data["timezone"] == "UTC"
    assert len(data["time"]) == 8 and data["time"].count(":") == 2
    assert data["iso"].endswith("+00:00")


def test_time_in_a_named_zone():
    data = content(call("get_current_time", timezone="Asia/Tokyo"))
    assert data["timezone"] == "Asia/Tokyo" and data["iso"].endswith("+09:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../../etc/passwd", ""])
def test_unknown_timezone_is_a_readable_error(zone: str):
    result = call("get_current_time", timezone=zone)
    assert result.error == f"Unknown timezone: {zone}. Use an IANA name such as Europe/Paris."


# --- weather ----------------------------------------------------------------------------------------------


def test_weather_demo_is_deterministic_and_fingerprinted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WEATHER_API_KEY", KEY)
    first = call("get_weather", location="Paris")
    again = content(call("get_weather", location="  PARIS "))
    data = content(first)
    assert data["source"] == "offline demo data"
    assert data["key_fingerprint"] == hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert KEY not in first.content
    assert {k: data[k] for k in ("temperature", "condition", "humidity")} == {
        k: again[k] for k in ("temperature", "condition", "humidity")
    }
    assert data["condition"] in examples.DEMO_CONDITIONS and 30 <= data["humidity"] <= 90
    fahrenheit = content(call("get_weather", location="Paris", unit="fahrenheit"))
    assert fahrenheit["temperature"] == round(data["temperature"] * 9 / 5 + 32, 1)


def test_weather_without_a_key_uses_demo(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WEATHER_API_KEY", raising=False)
    data = content(call("get_weather", location="Oslo"))
    assert data["key_fingerprint"] == hashlib.sha256(b"demo").hexdigest()[:12]
    assert data["source"] == "offline demo data"  # "demo" is a default, not a secret: not masked


def test_weather_arguments_are_validated():
    result = call("get_weather", unit="kelvin")
    assert result.error is not None and result.error.startswith("Invalid arguments for get_weather: location")
    assert "kelvin" not in result.error


class FakeResponse(io.BytesIO):
    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_weather_live_api(monkeypatch: pytest.MonkeyPatch):
    live_key = "live-key-0123456789"
    monkeypatch.setenv("WEATHER_API_KEY", live_key)
    seen: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> FakeResponse:
        seen.append(url)
        assert timeout < examples.WEATHER_TIMEOUT
        body = {"name": "Paris", "main": {"temp": 21.5, "humidity": 40}, "weather": [{"description": "sunny"}]}
        return FakeResponse(json.dumps(body).encode())

    monkeypatch.setattr(examples.urllib.request, "urlopen", fake_urlopen)
    result = call("get_weather", location="Paris")
    data = content(result)
    assert data["temperature"] == 21.5 and data["condition"] == "sunny" and data["source"] == "OpenWeatherMap"
    assert f"appid={live_key}" in seen[0] and "units=metric" in seen[0]
    assert live_key not in result.content


def http_error(code: int):  # type: ignore[no-untyped-def]
    """An HTTPError as urllib raises it: its text includes the URL, hence the key."""
    return lambda url: urllib.error.HTTPError(url, code, "error", None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make_error", "message"),
    [
        (lambda url: urllib.error.URLError(f"timed out fetching {url}"), "Weather service unavailable"),
        (lambda url: ValueError(f"bad JSON from {url}"), "Weather service unavailable"),
        (http_error(401), "Weather service unavailable"),
        (http_error(404), "Unknown location: Atlantis"),
    ],
)
def test_weather_api_failures_never_show_the_url(monkeypatch: pytest.MonkeyPatch, make_error: Any, message: str):
    live_key = "live-key-0123456789"
    monkeypatch.setenv("WEATHER_API_KEY", live_key)

    def failing_urlopen(url: str, timeout: float) -> None:
        raise make_error(url)

    monkeypatch.setattr(examples.urllib.request, "urlopen", failing_urlopen)
    result = call("get_weather", location="Atlantis")
    assert result.error == message
    assert live_key not in result.content and "appid" not in result.content


# --- notes (data store) -----------------------------------------------------------------------------------


def test_notes_round_trip_per_caller(fake: fakeredis.FakeRedis):
    assert content(call("add_note", fake, "alice", text="buy milk")) == {"saved": True, "count": 1}
    assert content(call("add_note", fake, "alice", text="call mum")) == {"saved": True, "count": 2}
    content(call("add_note", fake, "bob", text="someone else's"))
    listed = content(call("list_notes", fake, "alice"))
    assert [n["text"] for n in listed["notes"]] == ["buy milk", "call mum"] and listed["count"] == 2
    assert [n["text"] for n in content(call("list_notes", fake, "alice", limit=1))["notes"]] == ["call mum"]
    assert fake.llen(examples.notes_key("alice")) == 2
    assert content(call("list_notes", fake, "nobody")) == {"notes": [], "count": 0}


def test_notes_are_keyed_by_the_verified_caller_not_by_an_argument(fake: fakeredis.FakeRedis):
    content(call("add_note", fake, "alice", text="private"))
    # An LLM talked into naming another owner reads and writes only its own caller's notes.
    assert content(call("list_notes", fake, "mallory", owner="alice")) == {"notes": [], "count": 0}
    content(call("add_note", fake, "mallory", text="planted", owner="alice"))
    assert [json.loads(n)["text"] for n in fake.lrange(examples.notes_key("alice"), 0, -1)] == ["private"]
    assert "owner" not in json.dumps(examples.AddNoteArgs.model_json_schema())
    assert "owner" not in json.dumps(examples.ListNotesArgs.model_json_schema())


def test_notes_without_a_verified_caller_are_anonymous(fake: fakeredis.FakeRedis):
    content(call("add_note", fake, text="x"))
    assert fake.llen(examples.notes_key(examples.ANONYMOUS)) == 1


@pytest.mark.parametrize("arguments", [{"text": ""}, {"text": "x" * 501}, {}])
def test_bad_notes_are_refused(fake: fakeredis.FakeRedis, arguments: dict[str, str]):
    result = call("add_note", fake, "alice", **arguments)
    assert result.error is not None and result.error.startswith("Invalid arguments for add_note")
    assert fake.keys("*") == []


def test_example_specs():
    from workers.registry import registered

    specs = {name: entry.spec for name, entry in registered().items()}
    assert specs["add_note"].side_effects and not specs["add_note"].idempotent
    assert specs["list_notes"].idempotent and not specs["list_notes"].side_effects
    weather = specs["get_weather"].parameters
    assert weather["required"] == ["location"]
    assert weather["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]


# --- restaurants (slow lookup with a filler) --------------------------------------------------------------


def test_restaurants_are_found_with_a_filler_and_progress(monkeypatch: pytest.MonkeyPatch, fake: fakeredis.FakeRedis):
    from workers.registry import registered

    spec = registered()["find_restaurants"].spec
    assert spec.filler and spec.filler_delay < examples.SEARCH_SECONDS < spec.timeout  # the filler is heard
    monkeypatch.setattr(examples, "SEARCH_SECONDS", 0.02)
    monkeypatch.setattr(examples, "SEARCH_STEP", 0.01)
    listener = fake.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.reply_channel("gw"))
    data = content(call("find_restaurants", fake, city="Lyon"))
    assert data["city"] == "Lyon" and data["cuisine"] == "any" and 1 <= len(data["restaurants"]) <= 3
    assert data == content(call("find_restaurants", fake, city="Lyon"))  # deterministic demo data
    reports = [listener.get_message(timeout=0.01) for _ in range(5)]
    assert any(r and b"Still searching restaurants in Lyon" in r["data"] for r in reports)
    assert spec.parameters["required"] == ["city"] and "ctx" not in spec.parameters["properties"]
