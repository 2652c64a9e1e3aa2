"""RQ's stock ``SimpleWorker`` against our ``CallWorker``, in the same run: what the worker class buys.

The gateway and the job function stay out of it: the driver enqueues a call exactly as the gateway does (one
pipelined RQ enqueue of ``workers.execute.run_call``), waits for the result on its reply channel, then pauses
briefly so the single worker is idle again, and times enqueue → result published. The two classes take turns,
several rounds each, so a noisy neighbour hurts both alike.

``python -m benchmarks.workerclass --redis URL --worker-class simple|call`` is the worker process: the
production ``run_call`` with the benchmark functions loaded, on the production queue.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import redis
from rq import Queue, SimpleWorker

from benchmarks.stats import summarize
from shared import keys
from shared.envelopes import JOB_FUNCTION, CallJob
from tests.support.processes import Process, wait_until

CHANNEL = keys.reply_channel("bench-workerclass")
GATEWAY = keys.gateway_ref("bench-workerclass")
"""The driver's jobs name a gateway, as the gateway's do, so the worker's claim checks its liveness key."""


def run_worker(url: str, kind: str) -> None:
    from workers.callworker import CallWorker
    from workers.registry import load_modules

    load_modules(["benchmarks.functions"])
    connection = redis.Redis.from_url(url)
    cls = CallWorker if kind == "call" else SimpleWorker
    worker = cls([Queue(keys.queue_name("default"), connection=connection)], connection=connection)
    worker.work(logging_level="WARNING")


def _calls(url: str, count: int, pause: float) -> list[float]:
    connection = redis.Redis.from_url(url)
    queue = Queue(keys.queue_name("default"), connection=connection)
    pubsub = connection.pubsub()
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1)
    connection.set(keys.gateway_alive(GATEWAY), "1", ex=3600)  # the gateway's heartbeat, once for the whole run
    samples = []
    for i in range(count):
        job = CallJob(
            call_id=f"wc-{time.time_ns()}-{i}",
            name="bench_noop",
            arguments="{}",
            reply_channel=CHANNEL,
            deadline=time.time() + 30,
        )
        started = time.perf_counter()
        with connection.pipeline() as pipe:
            queue.enqueue_call(
                JOB_FUNCTION,
                args=(job.to_json(),),
                job_id=keys.job_id(job.call_id, gateway=GATEWAY),
                timeout=5,
                ttl=30,
                pipeline=pipe,
            )
            pipe.execute()
        while (message := pubsub.get_message(timeout=5)) is not None and message["type"] != "message":
            pass
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(pause)
    pubsub.close()
    connection.close()
    return samples[5:]  # the first calls warm caches


def _blocked(url: str) -> bool:
    """True once a worker waits in ``BLMOVE`` (ready for a job)."""
    client = redis.Redis.from_url(url)
    try:
        return any(c.get("cmd") == "blmove" for c in client.client_list())
    finally:
        client.close()


def compare(url: str, log_dir: Path, rounds: int, calls: int, pause: float = 0.005) -> dict[str, Any]:
    """Alternate the two worker classes; p50/p99 of enqueue → published per class, and the ratio of medians."""
    samples: dict[str, list[float]] = {"simple": [], "call": []}
    medians: dict[str, list[float]] = {"simple": [], "call": []}
    for _ in range(rounds):
        for kind in samples:
            proc = Process(
                ["-m", "benchmarks.workerclass", "--redis", url, "--worker-class", kind],
                {},
                log_dir / f"workerclass-{kind}.log",
            )
            try:
                wait_until(lambda: _blocked(url), 30, "the worker")
                batch = _calls(url, calls, pause)
            finally:
                proc.stop()
            samples[kind] += batch
            medians[kind].append(statistics.median(batch))
    out: dict[str, Any] = {kind: summarize(values) for kind, values in samples.items()}
    out["round_medians"] = {kind: [round(m, 3) for m in values] for kind, values in medians.items()}
    out["ratio_p50"] = round(out["call"]["p50"] / out["simple"]["p50"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--worker-class", choices=["simple", "call"], required=True)
    args = parser.parse_args()
    run_worker(args.redis, args.worker_class)


if __name__ == "__main__":
    main()
