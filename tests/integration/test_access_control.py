"""Access control on a real gateway: tokens in each accepted place, signed tokens, Origin allowlist, and the
refusal to listen publicly without credentials."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.auth import mint_token
from tests.support.client import AgentClient
from tests.support.processes import ROOT, Gateway, http_get

pytestmark = pytest.mark.integration

TOKEN = "static-token-for-tests"
SECRET = "hmac-secret-for-tests"
ORIGIN = "http://app.test"


@pytest.fixture(scope="module")
def locked(redis_server, workers, logs_dir) -> Iterator[Gateway]:
    gateway = Gateway(
        redis_server.url,
        logs_dir / "gw-locked.log",
        GATEWAY_TOKENS=TOKEN,
        TOKEN_SECRET=SECRET,
        ALLOWED_ORIGINS=ORIGIN,
    ).wait_ready()
    yield gateway
    assert gateway.stop() == 0


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value.response.status_code


async def converse(client: AgentClient) -> None:
    await client.start()
    await client.say("What's the weather in Paris?")
    assert "Paris" in await client.assistant_text()
    await client.close()


async def test_websocket_refused_without_a_valid_token(locked: Gateway):
    assert await refused_status(locked.url) == 401
    assert await refused_status(locked.url, additional_headers={"Authorization": "Bearer wrong"}) == 401
    assert await refused_status(locked.url + "?token=" + mint_token(SECRET, ttl=-5)) == 401  # expired
    assert await refused_status(locked.url + "?token=" + mint_token("not-the-secret", ttl=60)) == 401


async def test_each_credential_place_is_accepted(locked: Gateway):
    await converse(await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}))
    await converse(await AgentClient.connect(locked.url, additional_headers={"Authorization": f"Token {TOKEN}"}))
    await converse(await AgentClient.connect(locked.url + "?token=" + TOKEN))
    browser_like = await AgentClient.connect(locked.url, subprotocols=["token", mint_token(SECRET, ttl=60)])
    assert browser_like.ws.subprotocol == "token"
    await converse(browser_like)


async def test_origin_allowlist(locked: Gateway):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert await refused_status(locked.url, additional_headers=headers, origin="http://evil.test") == 403
    await converse(await AgentClient.connect(locked.url, additional_headers=headers, origin=ORIGIN))


def test_http_function_call_needs_a_token(locked: Gateway):
    body = json.dumps({"id": "auth-1", "name": "get_current_time", "arguments": "{}"}).encode()

    def post(headers: dict[str, str]) -> int:
        headers = {"Content-Type": "application/json", **headers}
        request = urllib.request.Request(locked.http + "/function-call", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({}) == 401
    assert post({"Authorization": "Bearer nope"}) == 401
    assert post({"Authorization": f"Bearer {TOKEN}"}) == 200
    assert http_get(locked.http + "/healthz")[0] == 200  # health checks stay open for the platform


def test_public_bind_without_credentials_is_refused(redis_server):
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "HOST": "0.0.0.0", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ALLOW_PUBLIC_WITHOUT_AUTH" in result.stderr
