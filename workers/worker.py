"""One worker process: a :class:`~workers.callworker.CallWorker` taking calls from our queues, plus a catalog
heartbeat.

The catalog (what this process can run) is published to Redis with an expiry and refreshed by a daemon
thread: gateways read it to know which functions the backend owns, and a crashed worker drops out of it by
itself when the expiry passes. ``SimpleWorker`` runs jobs in this process, without forking one per job
(a fork costs ~10 ms, more than the Redis work of a call).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time

import redis
from rq import Queue

from shared import keys
from shared.clock import CLOCK
from shared.config import Config, result_ttl_refusal
from shared.envelopes import WorkerCatalog
from shared.logs import LogFormat, redacted
from shared.logs import setup_logging as setup_process_logging
from shared.redis_errors import REDIS_FAILURES
from shared.redis_options import redis_options
from shared.supervisor import EXIT_BAD_CONFIG
from shared.tracing import setup_tracing
from workers.callworker import CallWorker
from workers.registry import catalog, load_modules
from workers.secrets import redact

log = logging.getLogger(__name__)

REDIS_WAIT = 60.0
"""Seconds a starting worker waits for Redis before giving up (exit code 1): the platform restarts it."""
REDIS_RETRY_WAIT = 1.0
"""Longest wait (s) between a running worker's attempts to reach Redis again after losing it."""
EXIT_NO_REDIS = 1


def setup_logging(level: str, tag: str, log_format: LogFormat = "text") -> None:
    """Log lines on stderr, tagged with the worker id (or "supervisor"), URL passwords and the secrets functions
    read (:mod:`workers.secrets`) masked; with ``log_format="json"`` JSON objects whose ``worker_id`` is the
    tag."""
    setup_process_logging(level, f"%(asctime)s {tag} %(levelname)s %(name)s: %(message)s", redact, log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tagged(tag))


class _Tagged(logging.Filter):
    """Gives every record a ``worker_id`` (a JSON field): lines outside a call's log context have it too."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker_id"):
            record.worker_id = self.tag
        return True


def wait_for_redis(url: str, timeout: float = REDIS_WAIT) -> redis.Redis:
    """A client that answered PING; exits the process with code 1 when Redis stays away ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_keepalive=True, **redis_options(url))
    started = time.monotonic()
    last_log = 0.0
    while True:
        try:
            client.ping()
            return client
        except REDIS_FAILURES:
            now = time.monotonic()
            if now - started > timeout:
                log.error("Redis at %s did not answer for %g s; giving up", redacted(url), timeout)
                sys.exit(EXIT_NO_REDIS)
            if now - last_log > 5:
                log.info("waiting for Redis at %s", redacted(url))
                last_log = now
            time.sleep(0.25)


class CatalogHeartbeat(threading.Thread):
    """Publishes this worker's catalog now and every ``ttl / 3`` seconds; removes it on :meth:`stop`.

    It also watches the supervisor: workers run in their own process group, so if the supervisor is killed
    outright nothing else would stop them. When the parent changes, the worker stops itself (warm shutdown).
    """

    def __init__(self, config: Config, worker_id: str) -> None:
        super().__init__(name="catalog-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.ttl = config.catalog_ttl
        self.queues = config.queues
        self.redis = redis.Redis.from_url(
            config.redis_url, socket_connect_timeout=2, socket_timeout=5, **redis_options(config.redis_url, config)
        )
        self.parent_pid = os.getppid()
        self._stop_event = threading.Event()

    def publish(self) -> None:
        entry = WorkerCatalog(
            worker_id=self.worker_id,
            queues=self.queues,
            functions=catalog(self.queues),
            pid=os.getpid(),
            hostname=socket.gethostname(),
            published_at=time.time(),
        )
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.catalog(self.worker_id), entry.to_json(), ex=self.ttl)
            pipe.sadd(keys.CATALOG_INDEX, self.worker_id)
            # The Redis clock rides along (no round trip of its own): deadlines are in Redis time.
            pipe.time()
            sent = time.time()
            *writes, server_time = pipe.execute(raise_on_error=False)
            received = time.time()
        for reply in writes:
            if isinstance(reply, Exception):
                raise reply
        if isinstance(server_time, Exception):  # no TIME (a proxy or fake server): keep the last offset
            log.debug("no Redis TIME in the heartbeat (%s)", server_time)
        else:
            CLOCK.update(server_time, sent, received)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.publish()
            except REDIS_FAILURES as exc:
                log.warning("could not publish the catalog (%s); retrying in %g s", type(exc).__name__, self.ttl / 3)
            if os.getppid() != self.parent_pid:
                log.warning("the supervisor is gone; stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self._stop_event.wait(self.ttl / 3)

    def stop(self) -> None:
        """Stop refreshing and withdraw the catalog, so gateways stop counting on this worker at once."""
        self._stop_event.set()
        self.join(timeout=2)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.catalog(self.worker_id))
                pipe.srem(keys.CATALOG_INDEX, self.worker_id)
                pipe.execute()
        except REDIS_FAILURES as exc:
            log.warning("could not withdraw the catalog (%s); it expires in %d s", type(exc).__name__, self.ttl)
        self.redis.close()


def ttl_refusal(config: Config) -> str | None:
    """Why this worker must not start with RESULT_TTL shorter than a deadline of its functions, or None: its
    claims live RESULT_TTL, and one expiring while its call still runs would let a duplicate job run it twice."""
    specs = catalog(config.queues)
    if not specs:
        return None
    longest = max(specs, key=lambda spec: spec.timeout)
    return result_ttl_refusal(config, longest.timeout, f"the timeout of function {longest.name}")


def worker_id_for(pid: int, index: int) -> str:
    """A worker's id (also its RQ name): unique per process, and the supervisor can rebuild it from the pid."""
    return f"{socket.gethostname()}.{pid}.{index}"


def run_worker(config: Config, index: int) -> None:
    """Run one worker until SIGTERM/SIGINT (a warm shutdown: the current call finishes first)."""
    worker_id = worker_id_for(os.getpid(), index)
    setup_logging(config.log_level, worker_id, config.log_format)
    setup_tracing("voice-function-workers")  # a call's run span (workers/observe.py), when the otel extra is set up
    connection = wait_for_redis(config.redis_url)
    try:
        load_modules(config.modules)
    except ImportError:
        log.exception("cannot start")
        sys.exit(EXIT_BAD_CONFIG)
    refusal = ttl_refusal(config)
    if refusal:
        log.error("%s", refusal)
        sys.exit(EXIT_BAD_CONFIG)
    CLOCK.measure(connection)  # deadlines are in Redis time (shared/clock.py); refreshed by the heartbeat

    heartbeat = CatalogHeartbeat(config, worker_id)
    heartbeat.start()
    queues = [Queue(keys.queue_name(q), connection=connection) for q in config.queues]
    worker = CallWorker(queues, connection=connection, name=worker_id)
    # RQ waits 1 s, then 2, 4... up to 60 s between attempts to reach a Redis it lost, so after a Redis restart an
    # idle worker stayed away for seconds to minutes after Redis was back (tests/faults/test_redis_restart.py).
    worker.max_connection_wait_time = REDIS_RETRY_WAIT
    functions = ", ".join(spec.name for spec in catalog(config.queues)) or "none"
    log.info("listening on %s; functions: %s", ", ".join(config.queues), functions)
    # RQ logs three lines per job at INFO (one with the job's arguments); our own line per call is enough.
    rq_level = "DEBUG" if config.log_level.upper() == "DEBUG" else "WARNING"
    try:
        worker.work(with_scheduler=False, logging_level=rq_level)
    finally:
        heartbeat.stop()
        connection.close()
        log.info("stopped")


def run_supervised_worker(config: Config, index: int) -> None:
    """Entry point of a worker started by the supervisor (``python -m workers``); defined here, not in
    ``__main__``, because a spawned child must import its target by module name.

    The worker leaves the supervisor's process group, so a terminal's Ctrl-C (sent to the whole group) reaches
    only the supervisor, which forwards one SIGTERM: a second signal would make RQ's warm shutdown a cold one.
    """
    os.setpgrp()
    run_worker(config, index)
