"""What an operator reads: ``/metrics`` moving with calls and sessions, summed over WEB_CONCURRENCY processes,
and LOG_FORMAT=json lines that can be joined on a call id, with the client's traceparent."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_server import RedisServer
from tests.faults.helpers import call, notices, traced_calls
from tests.support.client import AgentClient
from tests.support.processes import Gateway, Process, running_gateway

pytestmark = pytest.mark.integration

TOKEN = "metrics-test-token-1234"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "traceparent": TRACE}
SCRAPES = 6
"""Scrapes per look: with two processes behind one port, each of them answers some of them."""


@pytest.fixture(scope="module")
def observed(redis_server: RedisServer, workers: Process, logs_dir: Path) -> Iterator[Gateway]:
    env = {"LOG_FORMAT": "json", "GATEWAY_TOKENS": f"prom:{TOKEN}", "WEB_CONCURRENCY": "2"}
    with running_gateway(redis_server.url, logs_dir / "gateway-json.log", **env) as gateway:
        yield gateway


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def values(gateway: Gateway, name: str) -> set[float]:
    """The sample ``name`` (with its labels) in each of several scrapes: one value when every process sums."""
    found = set()
    for _ in range(SCRAPES):
        status, text = get(gateway.http + "/metrics", HEADERS)
        assert status == 200, text
        found.add(next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0))
    return found


def post_call(gateway: Gateway, name: str) -> dict:
    body = json.dumps({"id": "op1", "name": name, "arguments": "{}"}).encode()
    request = urllib.request.Request(
        gateway.http + "/function-call", data=body, headers={**HEADERS, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def test_metrics_need_credentials(observed: Gateway):
    assert get(observed.http + "/metrics")[0] == 401
    assert get(observed.http + "/metrics", {"Authorization": "Bearer wrong-token-5678"})[0] == 401
    status, text = get(observed.http + "/metrics", HEADERS)
    assert status == 200 and "# TYPE gateway_pending_calls gauge" in text
    assert values(observed, "gateway_live_workers") == {2.0}


async def test_metrics_move_with_calls_and_sessions_in_every_process(observed: Gateway):
    ok = 'gateway_calls_total{function="get_current_time",outcome="ok"}'
    errors = 'gateway_calls_total{function="get_current_time",outcome="error"}'
    sessions = 'gateway_sessions{provider="simulated"}'
    [before] = values(observed, ok)
    [errors_before] = values(observed, errors)
    for _ in range(3):
        assert "content" in post_call(observed, "get_current_time")
    client = await AgentClient.connect(observed.url, additional_headers=HEADERS)
    try:
        await client.start()
        assert values(observed, sessions) == {1.0}
        await client.say(call("get_current_time", timezone="Not/AZone"))
        await client.expect("BackendFunctionCall", status="finished")
    finally:
        await client.close()
    assert values(observed, ok) == {before + 3}
    assert values(observed, errors) == {errors_before + 1}
    assert values(observed, 'gateway_call_duration_seconds_count{function="get_current_time"}') == {
        before + errors_before + 4
    }


async def test_json_logs_parse_and_carry_the_call_id_and_traceparent(
    redis_server: RedisServer, workers: Process, logs_dir: Path
):
    with running_gateway(redis_server.url, logs_dir / "gateway-json-1.log", LOG_FORMAT="json") as gateway:
        client = await traced_calls(gateway.url, TRACE, call("get_current_time", timezone="UTC"))
        call_id = notices(client, "finished")[0]["id"]
    lines = [json.loads(line) for line in gateway.log().splitlines()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    finished = [line for line in lines if line.get("call_id") == call_id and "duration_ms" in line]
    assert finished, lines
    assert finished[0]["function"] == "get_current_time" and finished[0]["traceparent"] == TRACE
    assert finished[0]["session_id"] and finished[0]["worker_id"]
