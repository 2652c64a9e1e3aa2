"""`POST /function-call` (the prior art's contract) and the command-line client, against real processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from shared.redis_server import free_port
from tests.integration.conftest import CANARY, CANARY_FINGERPRINT
from tests.support.filler_functions import FILLER, PROGRESS
from tests.support.processes import ROOT, Gateway, http_get

pytestmark = pytest.mark.integration


def post(gateway: Gateway, body: bytes, method: str = "POST", path: str = "/function-call") -> tuple[int, dict]:
    request = urllib.request.Request(
        gateway.http + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def call_body(name: str, arguments: dict | str, call_id: str = "t1") -> bytes:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return json.dumps({"id": call_id, "name": name, "arguments": args}).encode()


def test_function_call_success(gateway: Gateway):
    status, body = post(gateway, call_body("get_weather", {"location": "Lima"}, "http-ok"))
    assert status == 200
    assert body["id"] == "http-ok"  # the client's id, echoed
    content = json.loads(body["content"])
    assert content["location"] == "Lima" and content["key_fingerprint"] == CANARY_FINGERPRINT
    assert CANARY not in json.dumps(body)


def test_function_call_error_result(gateway: Gateway):
    status, body = post(gateway, call_body("get_current_time", {"timezone": "Mars/Olympus"}, "http-err"))
    assert status == 200
    assert body == {"id": "http-err", "error": "Unknown timezone: Mars/Olympus. Use an IANA name such as Europe/Paris."}
    status, body = post(gateway, call_body("no_such_function", {}, "http-unknown"))
    assert (status, body) == (200, {"id": "http-unknown", "error": "Unknown function: no_such_function"})
    status, body = post(gateway, call_body("get_weather", "{not json", "http-badjson"))
    assert status == 200 and body["error"].startswith("Invalid arguments for get_weather")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"name": "get_weather", "arguments": "{}"}).encode(),
        json.dumps({"id": "x", "name": "get_weather", "arguments": {"location": "Paris"}}).encode(),
        json.dumps({"id": 1, "name": "get_weather", "arguments": "{}"}).encode(),
        json.dumps({"id": "x", "name": "", "arguments": "{}"}).encode(),
    ],
)
def test_function_call_bad_body(gateway: Gateway, body: bytes):
    status, answer = post(gateway, body)
    assert status == 400
    assert "error" in answer


def test_function_call_wrong_method(gateway: Gateway):
    assert post(gateway, b"", method="PUT")[0] == 405
    assert post(gateway, b"", method="DELETE")[0] == 405
    status, _ = http_get(gateway.http + "/function-call")
    assert status == 405


def test_function_call_oversize_body(gateway: Gateway):
    huge = call_body("get_weather", {"location": "x" * 100_000}, "http-huge")
    # The gateway answers 413 as soon as it reads Content-Length, without reading the body.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /function-call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(huge)}\r\n\r\n".encode()
        )
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413")


def test_function_call_malformed_http(gateway: Gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /function-call HTTP/1.1\r\nContent-Length: lots\r\n\r\n")
        assert sock.recv(4096).decode().startswith("HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /function-call HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(4096).decode().startswith("HTTP/1.1 400")


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.client", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_cli_prints_conversation_and_backend_calls(gateway: Gateway):
    result = run_cli("--url", gateway.url, "What's the weather in Paris?", "What time is it in Europe/Paris?")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("(simulated agent)")
    assert "user: What's the weather in Paris?" in lines
    assert any(line.startswith("[backend] get_weather(") and line.endswith("started") for line in lines)
    assert any(line.startswith("[backend] get_weather ok in") and "on worker" in line for line in lines)
    assert any(line.startswith("assistant: get_weather returned:") and CANARY_FINGERPRINT in line for line in lines)
    assert any(line.startswith("[backend] get_current_time ok") for line in lines)


def test_cli_refuses_to_run_client_functions(gateway: Gateway):
    result = run_cli("--url", gateway.url, "call open_door {}")
    assert result.returncode == 0, result.stderr
    assert "[client] open_door({}): not run" in result.stdout
    assert "open_door is not executed by this client" in result.stdout


def test_cli_unreachable_gateway():
    result = run_cli("--url", f"ws://127.0.0.1:{free_port()}/v1/agent/converse", "hello", timeout=30)
    assert result.returncode == 2
    assert "cannot reach the gateway" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refused_connection(gateway: Gateway):
    result = run_cli("--url", gateway.url.replace("/v1/agent/converse", "/nowhere"), "hello")
    assert result.returncode == 2
    assert "refused the connection: HTTP 404" in result.stderr


def test_cli_waits_past_a_filler_for_the_answer(gateway: Gateway):
    """The agent says a filler while the call runs: the CLI shows it and the progress, then waits for the answer."""
    result = run_cli("--url", gateway.url, 'call slow_lookup {"text": "the archive", "seconds": 1.5}')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"assistant: {FILLER}" in lines
    assert f"[backend] slow_lookup: {PROGRESS}" in lines
    assert any(line.startswith("assistant:") and "the archive" in line for line in lines), lines
