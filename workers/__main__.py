"""``python -m workers``: N worker processes under a supervisor (``voice-workers`` console script).

Why a supervisor (:mod:`shared.supervisor`) rather than N ``rq worker`` commands: one Procfile line scales the
worker count with ``WORKER_PROCESSES``, a worker that dies (OOM killer, a native crash, ``kill -9``) is
replaced within a second and its catalog withdrawn at once, and a deploy's SIGTERM becomes one warm shutdown
per worker (each finishes its current call).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
from contextlib import nullcontext
from multiprocessing.process import BaseProcess

import redis
from rq import SimpleWorker

from shared import keys
from shared.config import Config, config_or_exit
from shared.prometheus import multiprocess_directory, process_died
from shared.redis_errors import REDIS_FAILURES
from shared.redis_options import redis_options
from shared.supervisor import EXIT_BAD_CONFIG, Supervisor
from workers import metrics
from workers.registry import catalog, load_modules
from workers.worker import run_supervised_worker, setup_logging, ttl_refusal, wait_for_redis, worker_id_for

log = logging.getLogger("workers.supervisor")


def withdraw(config: Config, process: BaseProcess, index: int) -> None:
    """Remove a dead worker's catalog and RQ registration at once, rather than when they expire."""
    if process.pid is None:
        return
    worker_id = worker_id_for(process.pid, index)
    try:
        client = redis.Redis.from_url(
            config.redis_url, socket_connect_timeout=1, socket_timeout=2, **redis_options(config.redis_url, config)
        )
        with client:
            client.delete(keys.catalog(worker_id))
            client.srem(keys.CATALOG_INDEX, worker_id)
            rq_worker = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + worker_id, client)
            if rq_worker is not None:
                rq_worker.register_death()
    except REDIS_FAILURES as exc:
        log.info("could not withdraw worker %s (%s); its entries will expire", worker_id, type(exc).__name__)


def died(config: Config, process: BaseProcess, index: int) -> None:
    """A worker died: withdraw it, and drop its busy slots from the metrics."""
    withdraw(config, process, index)
    process_died(process.pid or 0)


def parse_args(argv: list[str] | None, config: Config) -> Config:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run backend function workers.")
    parser.add_argument("--processes", type=int, default=config.worker_processes, help="worker processes")
    parser.add_argument("--queues", default=config.worker_queues, help="comma-separated queues, by priority")
    parser.add_argument("--modules", default=config.worker_modules, help="comma-separated function modules")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    update = {"worker_processes": args.processes, "worker_queues": args.queues, "worker_modules": args.modules}
    return config.model_copy(update=update)


STOP_MARGIN = 5.0
"""Seconds a stopping worker gets beyond its longest function's timeout before the supervisor kills it."""


def stop_grace(config: Config) -> float:
    """How long the supervisor waits for a stopping worker: its running calls may take up to the longest
    function's timeout to finish (a warm shutdown lets them), plus :data:`STOP_MARGIN`; at least 10 s."""
    longest = max((spec.timeout for spec in catalog(config.queues)), default=0.0)
    return max(10.0, longest + STOP_MARGIN)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv, config_or_exit("workers"))
    setup_logging(config.log_level, f"{socket.gethostname()}.{os.getpid()}.supervisor", config.log_format)
    try:
        load_modules(config.modules)  # fail fast, before starting processes that would fail the same way
    except ImportError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    wait_for_redis(config.redis_url).close()  # after the modules: a typo in WORKER_MODULES needs no Redis to show
    refusal = ttl_refusal(config)
    if refusal:
        log.error("%s", refusal)
        return EXIT_BAD_CONFIG
    log.info("starting %d workers on queues %s", config.worker_processes, ", ".join(config.queues))
    # One endpoint for all the workers: they record in multiprocess mode, the supervisor serves the sum.
    with multiprocess_directory() if config.worker_metrics_port else nullcontext():
        served = metrics.serve(config.worker_metrics_port)
        if served is not None:
            log.info("worker metrics on port %d", config.worker_metrics_port)
        supervisor = Supervisor(
            run_supervised_worker,
            (config,),
            config.worker_processes,
            "worker",
            on_death=functools.partial(died, config),
            stop_grace=stop_grace(config),
        )
        try:
            return supervisor.run()
        finally:
            if served is not None:
                served[0].shutdown()


if __name__ == "__main__":
    sys.exit(main())
