"""The workers' side of what an operator reads: LOG_FORMAT=json lines of the supervisor and its workers that join
the gateway's on the provider's call id and carry the client's trace, and WORKER_METRICS_PORT moving with calls
summed over the worker processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.redis_server import RedisServer, free_port
from tests.faults.helpers import call, notices, traced_calls
from tests.support.processes import Process, http_get, running_gateway, start_workers, wait_until

pytestmark = pytest.mark.integration

TRACE = "00-5af92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = TRACE.split("-")[1]
OK = 'worker_calls_total{function="get_current_time",outcome="ok"}'
ERRORS = 'worker_calls_total{function="get_current_time",outcome="error"}'


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own: no other test's workers take these calls."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def json_workers(own_redis: RedisServer, logs_dir: Path) -> Iterator[tuple[Process, int]]:
    port = free_port()
    env = {"LOG_FORMAT": "json", "WORKER_METRICS_PORT": str(port)}
    proc = start_workers(own_redis.url, logs_dir / "workers-json.log", processes=2, **env)
    yield proc, port
    assert proc.stop() == 0, proc.log()


def sample(port: int, name: str) -> float | None:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), None)


async def test_worker_json_lines_join_the_gateways_on_the_call_id_with_the_clients_trace(
    own_redis: RedisServer, json_workers: tuple[Process, int], logs_dir: Path
):
    workers, port = json_workers
    ok_before, errors_before = sample(port, OK) or 0.0, sample(port, ERRORS) or 0.0
    with running_gateway(own_redis.url, logs_dir / "gateway-json-w.log", LOG_FORMAT="json") as gateway:
        requests = call("get_current_time", timezone="UTC"), call("get_current_time", timezone="Not/AZone")
        client = await traced_calls(gateway.url, TRACE, *requests)
        call_id = notices(client, "finished")[0]["id"]
    gateway_lines = [json.loads(line) for line in gateway.log().splitlines()]  # every line is one JSON object

    # Counted in whichever worker process ran it, summed in the supervisor's one endpoint.
    wait_until(lambda: sample(port, OK) == ok_before + 1, 10, "the ok call to be counted")
    assert sample(port, ERRORS) == errors_before + 1
    assert sample(port, 'worker_call_run_seconds_count{function="get_current_time"}') == (ok_before + errors_before + 2)
    assert sample(port, "worker_busy_slots") == 0

    worker_lines = [json.loads(line) for line in workers.log().splitlines()]
    assert all({"ts", "level", "logger", "message", "worker_id"} <= line.keys() for line in worker_lines)
    assert any(line["worker_id"].endswith(".supervisor") for line in worker_lines)  # the supervisor's too
    gateway_mine = [line for line in gateway_lines if line.get("call_id") == call_id]
    assert gateway_mine
    mine = [line for line in worker_lines if line.get("call_id") == call_id]
    [finish] = [line for line in mine if "duration_ms" in line]
    assert finish["function"] == "get_current_time"
    assert finish["message"].endswith(f" ok in {finish['duration_ms']:.1f} ms")
    assert finish["session_id"] == gateway_mine[0]["session_id"]
    assert finish["traceparent"].split("-")[1] == TRACE_ID
    assert finish["worker_id"] in {entry["worker_id"] for entry in mine}
