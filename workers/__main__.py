"""``python -m workers``: a small supervisor running N worker processes (``voice-workers`` console script).

Why a supervisor rather than N ``rq worker`` commands: one Procfile line scales the worker count with
``WORKER_PROCESSES``, a worker that dies (OOM killer, a native crash, ``kill -9``) is replaced within a second,
and a deploy's SIGTERM becomes one warm shutdown per worker (each finishes its current call).

Workers run in their own process group, so a terminal's Ctrl-C reaches only the supervisor, which forwards
exactly one SIGTERM: a second signal would turn RQ's warm shutdown into a cold one.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from contextlib import suppress
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import redis
from rq import SimpleWorker

from shared import keys
from shared.config import Config, get_config
from workers.registry import load_modules
from workers.worker import EXIT_BAD_CONFIG, run_supervised_worker, setup_logging, wait_for_redis, worker_id_for

log = logging.getLogger("workers.supervisor")

STOP_GRACE = 10.0
"""Seconds the workers get to finish their current call after SIGTERM before they are killed."""
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0
"""A worker that lived this long is considered healthy again: its next restart is immediate-ish."""


class Supervisor:
    def __init__(self, config: Config, processes: int) -> None:
        self.config = config
        self.processes = processes
        self.context = multiprocessing.get_context("spawn")  # no inherited sockets or threads from the parent
        self.children: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False

    def start(self, index: int) -> None:
        process = self.context.Process(target=run_supervised_worker, args=(self.config, index), name=f"worker-{index}")
        process.start()
        self.children[index] = process
        self.started_at[index] = time.monotonic()
        log.info("started worker %d (pid %s)", index, process.pid)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Forward the stop to every worker (RQ's warm shutdown); a repeated signal is forwarded again."""
        log.info("%s received; stopping %d workers", signal.Signals(signum).name, len(self.children))
        self.stopping = True
        for process in self.children.values():
            if process.pid is not None and process.exitcode is None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for index in range(self.processes):
            self.start(index)
        while not self.stopping:
            alive = [p.sentinel for p in self.children.values() if p.exitcode is None]
            wait(alive, timeout=0.5)
            if self.stopping:
                break
            code = self.reap_and_restart()
            if code is not None:
                self.request_stop(signal.SIGTERM, None)
                self.wait_for_children()
                return code
        self.wait_for_children()
        return 0

    def reap_and_restart(self) -> int | None:
        """Restart dead workers after a backoff; returns an exit code when restarting cannot help."""
        now = time.monotonic()
        for index, process in list(self.children.items()):
            if process.exitcode is None:
                continue
            if index not in self.restart_at:
                if process.exitcode == EXIT_BAD_CONFIG:
                    log.error("worker %d cannot start (bad configuration); stopping", index)
                    return EXIT_BAD_CONFIG
                lived = now - self.started_at[index]
                delay = 0.5 if lived > STABLE_AFTER else min(self.backoff.get(index, 0.25) * 2, MAX_BACKOFF)
                self.backoff[index] = delay
                self.restart_at[index] = now + delay
                log.warning(
                    "worker %d (pid %s) died (%s); restarting in %g s", index, process.pid, _how(process), delay
                )
                self.withdraw(process, index)
            elif now >= self.restart_at[index]:
                del self.restart_at[index]
                self.start(index)
        return None

    def withdraw(self, process: BaseProcess, index: int) -> None:
        """Remove a dead worker's catalog and RQ registration at once, rather than when they expire."""
        if process.pid is None:
            return
        worker_id = worker_id_for(process.pid, index)
        try:
            client = redis.Redis.from_url(self.config.redis_url, socket_connect_timeout=1, socket_timeout=2)
            with client:
                client.delete(keys.catalog(worker_id))
                client.srem(keys.CATALOG_INDEX, worker_id)
                rq_worker = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + worker_id, client)
                if rq_worker is not None:
                    rq_worker.register_death()
        except (redis.RedisError, OSError) as exc:
            log.info("could not withdraw worker %s (%s); its entries will expire", worker_id, type(exc).__name__)

    def wait_for_children(self) -> None:
        deadline = time.monotonic() + STOP_GRACE
        for process in self.children.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for index, process in self.children.items():
            if process.exitcode is None:
                log.warning("worker %d (pid %s) did not stop within %g s; killing it", index, process.pid, STOP_GRACE)
                process.kill()
                process.join(2)
        log.info("all workers stopped")


def _how(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


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


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv, get_config())
    setup_logging(config.log_level, f"{socket.gethostname()}.{os.getpid()}.supervisor")
    wait_for_redis(config.redis_url).close()
    try:
        load_modules(config.modules)  # fail fast, before starting processes that would fail the same way
    except ImportError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    log.info("starting %d workers on queues %s", config.worker_processes, ", ".join(config.queues))
    return Supervisor(config, config.worker_processes).run()


if __name__ == "__main__":
    sys.exit(main())
