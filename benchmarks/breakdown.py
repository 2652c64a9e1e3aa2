"""Where the time of one call goes, stage by stage, from timestamps the system already writes.

Every call leaves timestamps behind, all from ``time.time()``-based clocks of one machine:

- our job envelope (the RQ job's argument): ``enqueued_at``, when the gateway's dispatcher built it;
- RQ's job hash: ``enqueued_at`` (RQ's enqueue, in the gateway), ``started_at`` (the worker begins the job);
- our stored result: ``started_at`` / ``finished_at`` around the function (validation and serialisation in);
- the gateway's ``BackendFunctionCall`` notice: ``duration_ms`` from the call's start to its response sent;
- the upstream's latency (request sent → response received).

Medians of the differences give the stages. Nothing here is added to the hot path; this reads Redis after
the run, from RQ's finished registry (the calls of the 1-session run are matched by their call ids).
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError
from rq.job import Job as RQJob

from shared import keys
from shared.envelopes import CallJob, CallResult

STAGES = [
    ("ws_hops", "provider → gateway → provider: two loopback WebSocket hops, frame parsing, the call's task"),
    ("gateway_enqueue", "gateway: job envelope built, RQ's enqueue commands prepared on the event loop"),
    ("queue_to_worker", "enqueue written, worker wakes (BLMOVE), fetches the job and claims the call (one round trip)"),
    ("worker_to_function", "job decoded, deadline checked (RQ's start records are written after the answer)"),
    ("function", "the function itself, with argument validation and result serialisation"),
    ("result_to_response", "result stored + published, pub/sub delivery, response sent (and the notice)"),
]


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _provider_id(call_id: str, notices: dict[str, float]) -> str | None:
    """The provider's call id behind a backend call id: the same, or scoped by the session (``<session>-<id>``)."""
    if call_id in notices:
        return call_id
    scoped = call_id.split("-", 1)[-1]
    return scoped if scoped in notices else None


def breakdown(redis_url: str, notices: dict[str, float], upstream_p50_ms: float, limit: int = 400) -> dict[str, Any]:
    """Median milliseconds per stage over the last ``limit`` finished calls whose notices the client received."""
    connection = redis.Redis.from_url(redis_url)
    rows: dict[str, list[float]] = {name: [] for name, _ in STAGES[1:]}
    try:
        # RQ scores its finished registry by expiry, not by finish time: read it all, keep the calls of this run.
        finished = [i.decode() for i in connection.zrange(f"rq:finished:{keys.queue_name('default')}", 0, -1)]
        matched: list[tuple[CallJob, RQJob, str]] = []
        for start in range(0, len(finished), 500):
            for rq_job in RQJob.fetch_many(finished[start : start + 500], connection=connection):
                try:
                    job = CallJob.from_json(rq_job.args[0]) if rq_job is not None else None
                except (ValidationError, IndexError, TypeError):
                    continue
                provider_id = _provider_id(job.call_id, notices) if job else None
                if job and rq_job and provider_id:
                    matched.append((job, rq_job, provider_id))
        matched.sort(key=lambda m: m[0].enqueued_at)
        for job, rq_job, provider_id in matched[-limit:]:
            raw = connection.get(keys.result(job.call_id))
            rq_enqueued, rq_started = _epoch(rq_job.enqueued_at), _epoch(rq_job.started_at)
            if raw is None or rq_enqueued is None or rq_started is None:
                continue
            result = CallResult.from_json(raw)
            rows["gateway_enqueue"].append((rq_enqueued - job.enqueued_at) * 1000)
            rows["queue_to_worker"].append((rq_started - rq_enqueued) * 1000)
            rows["worker_to_function"].append((result.started_at - rq_started) * 1000)
            rows["function"].append((result.finished_at - result.started_at) * 1000)
            duration_ms = notices[provider_id]
            rows["result_to_response"].append(duration_ms - (result.finished_at - job.enqueued_at) * 1000)
    finally:
        connection.close()
    gateway_p50 = statistics.median(notices.values()) if notices else 0.0
    medians = {"ws_hops": round(upstream_p50_ms - gateway_p50, 3)}
    medians.update({name: round(statistics.median(values), 3) for name, values in rows.items() if values})
    return {
        "calls": len(rows["function"]),
        "stages_ms": medians,
        "descriptions": dict(STAGES),
        "upstream_p50_ms": upstream_p50_ms,
        "gateway_p50_ms": round(gateway_p50, 3),
    }
