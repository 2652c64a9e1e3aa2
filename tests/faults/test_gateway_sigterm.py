"""The gateway gets SIGTERM (a deploy, a scale-down) while sessions are open and backend calls are pending.

It drains: ``/readyz`` answers 503 at once and new sessions get 503, the calls running on workers are answered
with their real results, sessions stay open meanwhile; at DRAIN_TIMEOUT the calls still pending are answered
with an error and cancelled (marked with ``keys.cancelled(call_id)`` so no worker starts them later), each
session is closed with 1001 (going away), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from shared import keys
from shared.redis_server import RedisServer
from tests.faults.helpers import backend_keys, call, closed, notices, queue_drained, started_count, stop_all
from tests.support.client import AgentClient
from tests.support.processes import Gateway, http_status, start_workers, wait_until
from tests.support.reliability import Entry

pytestmark = pytest.mark.faults

BUSY_SESSIONS = 4
CALLS_PER_SESSION = 2
IDLE_SESSIONS = 2
WORKERS = 2
CONNECT_ATTEMPTS = 5
CALL_SECONDS = 3
DRAIN_TIMEOUT = 4.5
"""Long enough for the calls running at SIGTERM to finish, not for the next round (nor its 5 s deadline)."""


async def handshake_status(url: str) -> int | None:
    """The HTTP status refusing a new WebSocket connection (None: it opened; 0: the socket was refused)."""
    try:
        async with connect(url, open_timeout=3):
            return None
    except InvalidStatus as exc:
        return exc.response.status_code
    except (OSError, InvalidHandshake, TimeoutError):
        return 0


async def refused(url: str) -> bool:
    """True when a new WebSocket connection cannot be opened."""
    return await handshake_status(url) is not None


async def test_sigterm_with_pending_calls(redis_server: RedisServer, logs_dir: Path, reliability: Entry):
    """The gateway SIGTERMed with sessions open and calls pending"""
    # One call per worker at once (WORKER_CONCURRENCY): the others stay queued when the gateway cancels them.
    workers = start_workers(redis_server.url, logs_dir / "term-workers.log", processes=WORKERS, WORKER_CONCURRENCY="1")
    gateway = Gateway(redis_server.url, logs_dir / "term-gateway.log", DRAIN_TIMEOUT=str(DRAIN_TIMEOUT)).wait_ready()
    db = redis.Redis.from_url(redis_server.url)
    try:
        busy = [await AgentClient.connect(gateway.url) for _ in range(BUSY_SESSIONS)]
        idle = [await AgentClient.connect(gateway.url) for _ in range(IDLE_SESSIONS)]
        tags = [f"term-s{s}-c{c}" for s in range(BUSY_SESSIONS) for c in range(CALLS_PER_SESSION)]
        for client in idle:
            await client.start()
        for s, client in enumerate(busy):
            await client.start()
            mine = tags[s * CALLS_PER_SESSION : (s + 1) * CALLS_PER_SESSION]
            await client.say(" and ".join(call("slow_write", tag=tag, seconds=CALL_SECONDS) for tag in mine))
            for _ in mine:
                await client.expect("BackendFunctionCall", status="started")
        provider_ids = [n["id"] for c in busy for n in notices(c, "started")]
        tag_of = {n["id"]: json.loads(n["arguments"])["tag"] for c in busy for n in notices(c, "started")}
        await asyncio.to_thread(wait_until, lambda: started_count(db, tags) == WORKERS, 5, "the workers to start")
        running = [i for i in provider_ids if started_count(db, [tag_of[i]])]
        # Each call is enqueued just after its "started" notice: read the backend keys once they all run.
        keys_of = await asyncio.to_thread(backend_keys, db, provider_ids)
        call_ids = [keys_of[i] for i in provider_ids]

        terminated = time.monotonic()
        gateway.popen.send_signal(signal.SIGTERM)
        ready_status = await asyncio.to_thread(
            wait_until, lambda: (code := http_status(gateway.http + "/readyz")) != 200 and code, 2, "/readyz to fail"
        )
        refusals = [await handshake_status(gateway.url) for _ in range(CONNECT_ATTEMPTS)]
        http_call_status = await asyncio.to_thread(post_status, gateway)
        for provider_id in running:
            client = next(c for c in busy if any(n["id"] == provider_id for n in notices(c, "started")))
            await client.expect("BackendFunctionCall", status="finished", id=provider_id, timeout=DRAIN_TIMEOUT)
        idle_open_while_draining = all(client.ws.protocol.close_rcvd is None for client in idle)
        close_codes = [await closed(c, timeout=DRAIN_TIMEOUT + 5) for c in busy + idle]
        for client in busy:
            await read_rest(client)
        closed_after = time.monotonic() - terminated
        attempts = [await refused(gateway.url) for _ in range(CONNECT_ATTEMPTS)]
        exit_code = await asyncio.to_thread(gateway.popen.wait, 15)
        exited_after = time.monotonic() - terminated

        answers = {n["id"]: n for c in busy for n in notices(c, "finished")}
        answered = {keys_of.get(i, i) for i in answers}
        await asyncio.to_thread(
            wait_until,
            lambda: all(i in answered or db.get(keys.cancelled(i)) == b"1" for i in call_ids),
            5,
            "every pending call to be answered or cancelled",
        )
        cancelled = [i for i in call_ids if db.get(keys.cancelled(i)) == b"1"]
        starts_when_cancelled = started_count(db, tags)
        await asyncio.to_thread(wait_until, lambda: queue_drained(db), 15, "the running calls to end")
        starts_in_the_end = started_count(db, tags)
        log = gateway.log()
        real_results = [i for i in running if answers.get(i, {}).get("ok")]

        reliability.tried = (
            f"SIGTERM to the gateway (DRAIN_TIMEOUT {DRAIN_TIMEOUT} s) with {BUSY_SESSIONS + IDLE_SESSIONS} sessions "
            f"open and {len(call_ids)} backend calls pending ({WORKERS} running, {len(call_ids) - WORKERS} queued); "
            f"{CONNECT_ATTEMPTS} connection attempts while draining and after"
        )
        reliability.happened = (
            f"/readyz {ready_status} at once; new sessions refused with {'/'.join(map(str, set(refusals)))} while "
            f"draining; {len(real_results)}/{len(running)} calls running at SIGTERM answered with their results; "
            f"idle sessions {'kept open' if idle_open_while_draining else 'closed'} meanwhile; "
            f"all sessions closed with {'/'.join(str(c) for c in sorted(set(close_codes), key=str))} within "
            f"{closed_after * 1000:.0f} ms; "
            f"{sum(attempts)}/{CONNECT_ATTEMPTS} new connections refused; pending calls: {len(answered)} answered, "
            f"{len(cancelled)} cancelled, {starts_in_the_end - starts_when_cancelled} started afterwards; exit code "
            f"{exit_code} after {exited_after:.2f} s"
        )
        reliability.figures.update(
            readyz_when_draining=ready_status,
            new_sessions_while_draining=refusals,
            http_call_while_draining=http_call_status,
            running_calls_answered_with_results=f"{len(real_results)}/{len(running)}",
            sessions=BUSY_SESSIONS + IDLE_SESSIONS,
            pending_calls=len(call_ids),
            close_codes=close_codes,
            sessions_closed_within_seconds=closed_after,
            connections_refused=f"{sum(attempts)}/{CONNECT_ATTEMPTS}",
            answered=len(answered),
            cancelled=len(cancelled),
            calls_started_after_cancellation=starts_in_the_end - starts_when_cancelled,
            exit_code=exit_code,
            exited_after_seconds=exited_after,
        )

        assert ready_status == 503
        assert refusals == [503] * CONNECT_ATTEMPTS
        assert http_call_status == 503
        assert real_results == running, answers
        assert idle_open_while_draining
        assert close_codes == [1001] * (BUSY_SESSIONS + IDLE_SESSIONS)
        assert all(attempts)
        assert answered == set(call_ids), (answers, log[-3000:])  # every call answered upstream
        assert set(cancelled) == {keys_of[i] for i in provider_ids if i not in running}  # the rest given up
        assert all("shutting down" in answers[i]["error"] for i in provider_ids if i not in running)
        assert starts_in_the_end == starts_when_cancelled, "a call started after the gateway cancelled it"
        assert exit_code == 0
        assert "Traceback" not in log and "internal error" not in log
    finally:
        db.close()
        await stop_all(gateway, workers)


async def read_rest(client: AgentClient) -> None:
    """Read the frames still buffered on a closed connection, so ``notices`` sees them."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while True:
            await client.next(timeout=1)


def post_status(gateway: Gateway) -> int:
    """The status of a ``POST /function-call``."""
    body = json.dumps({"id": "d1", "name": "get_current_time", "arguments": "{}"}).encode()
    request = urllib.request.Request(
        gateway.http + "/function-call", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def mute_client(gateway: Gateway) -> socket.socket:
    """A WebSocket client that completes its handshake, then never reads or answers again (a phone that lost its
    network): the gateway's close frame gets no reply."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/agent/converse HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101"), "the handshake failed"
    return sock


def test_a_mute_client_does_not_hold_up_the_stop(redis_server: RedisServer, logs_dir: Path) -> None:
    """Closing sessions at the end of a drain waits a short while for clients' close frames, not websockets'
    default 10 s: the stop stays within DRAIN_TIMEOUT plus a couple of seconds, under the platforms' 30 s."""
    gateway = Gateway(redis_server.url, logs_dir / "mute-gateway.log", DRAIN_TIMEOUT="1").wait_ready()
    clients = [mute_client(gateway) for _ in range(3)]
    try:
        started = time.monotonic()
        exit_code = gateway.stop(timeout=30)
        took = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    assert exit_code == 0, gateway.log()
    assert took < 7, f"the gateway took {took:.1f} s to stop"  # 10+ s with websockets' default close timeout
