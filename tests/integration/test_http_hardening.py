"""``POST /function-call`` under attack and load (issue 12): every HTTP call is its own call, and the endpoint
obeys the WebSocket's rules (content type, CORS, limits), against a real gateway, workers and Redis."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.functions import counter_key
from tests.support.processes import Gateway, running_gateway, wait_until

pytestmark = pytest.mark.integration

ORIGIN = "http://app.test"


def request(
    gateway: Gateway,
    method: str = "POST",
    path: str = "/function-call",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One request from the loopback address ``source`` (each test its own: the limits are per address)."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def call(
    gateway: Gateway,
    name: str,
    arguments: dict,
    call_id: str = "c1",
    source: str = "127.0.0.1",
    content_type: str = "application/json",
    **headers: str,
) -> tuple[int, dict[str, str], dict]:
    body = json.dumps({"id": call_id, "name": name, "arguments": json.dumps(arguments)}).encode()
    status, got, raw = request(gateway, body=body, headers={"Content-Type": content_type, **headers}, source=source)
    return status, got, json.loads(raw or b"{}")


def in_parallel(*calls) -> list:  # type: ignore[no-untyped-def]
    """Run the ``(function, args...)`` tuples at once on threads, return their results in order."""
    results: list = [None] * len(calls)

    def run(index: int, fn, *args) -> None:  # type: ignore[no-untyped-def]
        results[index] = fn(*args)

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# --- item 1: call ids ----------------------------------------------------------------------------------------


@pytest.mark.attack("HTTP callers sharing or reusing a call id")
def test_two_concurrent_callers_with_one_id_get_their_own_results(gateway: Gateway):
    alice, bob = in_parallel(
        (call, gateway, "slow_echo", {"text": "alice", "seconds": 1}, "same-id"),
        (call, gateway, "slow_echo", {"text": "bob", "seconds": 1}, "same-id"),
    )
    assert alice[0] == bob[0] == 200
    assert json.loads(alice[2]["content"]) == {"echo": "alice"} and alice[2]["id"] == "same-id"
    assert json.loads(bob[2]["content"]) == {"echo": "bob"} and bob[2]["id"] == "same-id"


@pytest.mark.attack("HTTP callers sharing or reusing a call id")
def test_a_reused_id_gets_its_own_result_not_the_stored_one(gateway: Gateway):
    call_id = "reused-" + uuid.uuid4().hex[:8]
    status, _, first = call(gateway, "slow_echo", {"text": "victim's secret"}, call_id)
    assert status == 200 and json.loads(first["content"]) == {"echo": "victim's secret"}
    status, _, second = call(gateway, "slow_echo", {"text": "attacker"}, call_id)
    assert status == 200 and json.loads(second["content"]) == {"echo": "attacker"}


@pytest.mark.parametrize(
    "call_id, name",
    [
        ("", "slow_echo"),
        ("a b", "slow_echo"),
        ("x" * 129, "slow_echo"),
        ("caf\u00e9", "slow_echo"),
        ("../etc", "slow_echo"),
        ("<script>", "slow_echo"),
        ("ok", "slow echo"),
        ("ok", "x" * 65),
        ("ok", "a.b"),
        ("ok", "\u0000"),
    ],
)
@pytest.mark.attack("HTTP callers sharing or reusing a call id")
def test_bad_ids_and_names_are_refused_with_400(gateway: Gateway, call_id: str, name: str):
    status, _, body = call(gateway, name, {"text": "x"}, call_id)
    assert status == 400
    assert body["error"].startswith("Field 'id'" if name == "slow_echo" else "Field 'name'")


def test_the_longest_allowed_id_is_accepted(gateway: Gateway):
    call_id = "A-z_0.9:" + "x" * 120
    status, _, body = call(gateway, "slow_echo", {"text": "long"}, call_id)
    assert status == 200 and body["id"] == call_id


@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_a_call_with_a_deadline_over_ten_seconds_is_answered(gateway: Gateway):
    """The handshake timeout (10 s) used to cut the connection of any HTTP request still running."""
    status, _, body = call(gateway, "slow_call", {"seconds": 11})
    assert status == 200
    assert json.loads(body["content"]) == {"slept": 11}


# --- item 2: the WebSocket's rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"])
@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_a_non_json_post_runs_nothing(gateway: Gateway, redis_client: redis.Redis, content_type: str):
    tag = "cors-" + uuid.uuid4().hex[:12]
    status, _, body = call(gateway, "count_calls", {"tag": tag}, content_type=content_type)
    assert status == 415 and "application/json" in body["error"]
    time.sleep(1)  # had it been enqueued, a worker would have run it by now
    assert redis_client.get(counter_key(tag)) is None


def test_json_with_a_charset_is_accepted(gateway: Gateway, redis_client: redis.Redis):
    tag = "json-" + uuid.uuid4().hex[:12]
    status, _, body = call(gateway, "count_calls", {"tag": tag}, content_type="application/json; charset=utf-8")
    assert (status, body["content"]) == (200, "1")
    assert redis_client.get(counter_key(tag)) == b"1"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/"])
def test_head_answers_like_get_without_a_body(gateway: Gateway, path: str):
    get_status, get_headers, get_body = request(gateway, "GET", path)
    status, headers, body = request(gateway, "HEAD", path)
    assert status == get_status == 200
    assert body == b""
    assert headers["content-type"] == get_headers["content-type"]
    assert int(headers["content-length"]) == len(get_body) > 0


def test_head_of_other_paths(gateway: Gateway):
    assert request(gateway, "HEAD", "/nowhere")[0] == 404
    status, headers, _ = request(gateway, "HEAD", "/function-call")
    assert status == 405 and "POST" in headers["allow"]


@pytest.fixture(scope="module")
def strict(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        logs_dir / "gw-http-strict.log",
        MAX_PENDING_CALLS="2",
        CLIENT_MESSAGE_RATE="5",
        MAX_SESSIONS="3",
        ALLOWED_ORIGINS=f"{ORIGIN},http://other.test",
    ) as gateway:
        yield gateway


def test_preflight_grants_a_configured_origin(strict: Gateway):
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, got, body = request(strict, "OPTIONS", headers=headers, source="127.0.0.2")
    assert (status, body) == (204, b"")
    assert got["access-control-allow-origin"] == ORIGIN
    assert got["access-control-allow-methods"] == "POST"
    assert {h.strip().lower() for h in got["access-control-allow-headers"].split(",")} == {
        "authorization",
        "content-type",
    }
    assert int(got["access-control-max-age"]) > 0


@pytest.mark.parametrize("origin", ["http://evil.test", "null", "http://app.test.evil.test", None])
@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_preflight_from_another_origin_gets_no_grant(strict: Gateway, origin: str | None):
    headers = {"Access-Control-Request-Method": "POST", **({"Origin": origin} if origin else {})}
    status, got, _ = request(strict, "OPTIONS", headers=headers, source="127.0.0.2")
    assert status == 403
    assert not any(name.startswith("access-control-") for name in got)


def test_post_from_a_configured_origin_may_be_read_by_it(strict: Gateway):
    status, headers, body = call(strict, "slow_echo", {"text": "cors"}, source="127.0.0.3", Origin=ORIGIN)
    assert status == 200 and json.loads(body["content"]) == {"echo": "cors"}
    assert headers["access-control-allow-origin"] == ORIGIN and headers["vary"] == "Origin"


@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_calls_in_flight_per_address_are_limited(strict: Gateway):
    held = {"text": "held", "seconds": 3}
    results = in_parallel(*[(call, strict, "slow_echo", held, f"p{i}", "127.0.0.4") for i in range(3)])
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429]
    [refused] = [r for r in results if r[0] == 429]
    assert "pending" in refused[2]["error"] and refused[1]["retry-after"] == "1"
    # Another address is not affected by this one's calls.
    assert call(strict, "slow_echo", {"text": "free"}, source="127.0.0.5")[0] == 200


@pytest.mark.attack("POST /function-call around the WebSocket's rules")
def test_request_rate_per_address_is_limited(strict: Gateway):
    answers = [call(strict, "slow_echo", {"text": "r"}, f"r{i}", "127.0.0.6") for i in range(30)]
    refused = [a for a in answers if a[0] == 429]
    assert refused, "30 requests at once from one address must exceed 5/s with bursts of 10"
    assert all(a[0] in (200, 429) for a in answers)
    assert int(refused[0][1]["retry-after"]) >= 1 and "Too many requests" in refused[0][2]["error"]
    assert call(strict, "slow_echo", {"text": "other"}, source="127.0.0.7")[0] == 200


async def ws_status(gateway: Gateway) -> int:
    try:
        async with connect(gateway.url, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.attack("POST /function-call around the WebSocket's rules")
async def test_http_calls_count_with_sessions(strict: Gateway):
    held = {"seconds": 10}  # long enough to hold the gateway full on a loaded machine
    answers: list[tuple[int, dict[str, str], dict]] = []  # shown if the gateway never fills: why a call ended

    def held_call(i: int) -> None:
        answers.append(call(strict, "slow_call", held, f"s{i}", f"127.0.0.{8 + i}"))

    threads = [threading.Thread(target=held_call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        # Three HTTP calls in flight fill MAX_SESSIONS=3: a WebSocket is then refused, and so is a fourth call.
        # The probe is a real WebSocket: one that gets through holds a session slot while it is open, and a held
        # call arriving meanwhile would be refused (503) in its place. So the calls go first.
        await asyncio.sleep(1.0)
        deadline = time.monotonic() + 8
        while await ws_status(strict) != 503:
            assert time.monotonic() < deadline, f"the held calls never filled the gateway: {answers}"
            await asyncio.sleep(0.05)
        status, _, body = call(strict, "slow_echo", {"text": "x"}, source="127.0.0.20")
        assert status == 503 and "retry later" in body["error"]
    finally:
        for thread in threads:
            thread.join(30)
    wait_until(lambda: call(strict, "slow_echo", {"text": "after"}, source="127.0.0.21")[0] == 200, 15, "room again")
