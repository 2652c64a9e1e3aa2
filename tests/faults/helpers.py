"""Small tools shared by the fault tests: call syntax, the gateway's call notices, waiting for a close."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis
from rq import Queue, Worker

from shared import keys
from tests.support.client import AgentClient
from tests.support.functions import counter_key
from tests.support.processes import Process

DEADLINE_MARGIN = 1.0
"""Seconds a call's answer may trail its deadline: the gateway takes one last look at the stored result
(bounded by 0.5 s) and the machine is shared and noisy."""


def call(name: str, **arguments: object) -> str:
    """The simulated agent's explicit syntax: it requests exactly this call."""
    return f"call {name} {json.dumps(arguments)}"


def notices(client: AgentClient, status: str | None = None) -> list[dict[str, Any]]:
    """The ``BackendFunctionCall`` notices the client received (``started``, ``finished``, ``cancelled``)."""
    found = [m for m in client.messages() if m.get("type") == "BackendFunctionCall"]
    return [n for n in found if status is None or n["status"] == status]


async def traced_calls(url: str, traceparent: str, *requests: str) -> AgentClient:
    """A session that sends ``traceparent`` on its upgrade, says each of ``requests`` (:func:`call`) and waits for
    its call's ``finished`` notice; closed when it returns (its messages stay readable)."""
    client = await AgentClient.connect(url, additional_headers={"traceparent": traceparent})
    try:
        await client.start()
        for request in requests:
            await client.say(request)
            await client.expect("BackendFunctionCall", status="finished")
    finally:
        await client.close()
    return client


async def closed(client: AgentClient, timeout: float = 10) -> int | None:
    """Wait until the connection is closed; return the code of the gateway's close frame (None: no close frame,
    the connection was just cut)."""
    async with asyncio.timeout(timeout):
        await client.ws.wait_closed()
    received = client.ws.protocol.close_rcvd
    return received.code if received else None


def started_count(client: redis.Redis, tags: list[str]) -> int:
    """How many of the ``slow_write`` calls under ``tags`` have started (the function counts its start first)."""
    return sum(int(client.get(counter_key(tag + ".started")) or 0) for tag in tags)


def queue_drained(client: redis.Redis) -> bool:
    """No job waits in the default queue and no worker is running one."""
    idle = all(w.get_state() != "busy" for w in Worker.all(connection=client))
    return idle and Queue(keys.queue_name("default"), connection=client).count == 0


async def stop_all(*processes: Process) -> None:
    """Stop every process, even when one of them fails to, then insist that each exited with 0."""
    codes = [await asyncio.to_thread(p.stop) for p in processes]
    for process, code in zip(processes, codes, strict=True):
        assert code == 0, f"{process.log_path.name}: exit code {code}\n{process.log()[-3000:]}"


__all__ = [
    "DEADLINE_MARGIN",
    "call",
    "closed",
    "notices",
    "queue_drained",
    "started_count",
    "stop_all",
]


def backend_keys(client: redis.Redis, provider_ids: list[str]) -> dict[str, str]:
    """Provider call id → the gateway's backend key for it (``<session id>-<provider id>``, see
    ``Session.backend_key``), read from the envelopes of the RQ jobs the gateway enqueued."""
    from rq.job import Job as RQJob

    from shared.envelopes import CallJob

    wanted = set(provider_ids)
    found: dict[str, str] = {}
    for key in client.scan_iter("rq:job:fc*"):
        try:
            envelope = CallJob.from_json(RQJob.fetch(key.decode().removeprefix("rq:job:"), connection=client).args[0])
        except Exception:  # a job expiring under our feet
            continue
        provider_id = envelope.call_id.split("-", 1)[1]
        if provider_id in wanted:
            found[provider_id] = envelope.call_id
    return found
