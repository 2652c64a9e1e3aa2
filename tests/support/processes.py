"""The development harness: start the real processes as a deployment runs them, wait for them, stop them.

Tests and benchmarks both use it (``benchmarks/`` depends on the dev extras), so there is one way to start
``python -m workers`` and ``python -m gateway``, to wait until they are ready and to read which workers are
alive; each caller adds only its own settings (the benchmarks point the gateway at their scripted upstream and
load their own functions with ``WORKER_MODULES``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis

from shared import keys
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
TEST_MODULES = "workers.examples,tests.support.functions,tests.support.filler_functions"
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; ``TimeoutError`` names ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process whose combined output goes to a log file the caller can read afterwards.

    ``args`` are ``python`` arguments (``["-m", "gateway"]``), or a whole command when the first is an absolute
    path (the benchmarks' plain ``rq worker``). It runs in the repository with ``env`` added to ours.
    """

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = args if os.path.isabs(args[0]) else [sys.executable, *args]
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 50) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def check(self) -> None:
        """Raise if the process has exited: a wait for it to become ready then fails at once, with its log."""
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log_path.name}: exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig``, wait up to ``timeout`` s (then kill); the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def live_workers(redis_url: str) -> list[dict]:
    """The catalogs live workers have published (``WorkerCatalog`` as JSON: ``pid``, ``functions``, ...)."""
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [m.decode() for m in client.smembers(keys.CATALOG_INDEX)]
        raw = client.mget([keys.catalog(i) for i in ids]) if ids else []
        return [json.loads(r) for r in raw if r]
    finally:
        client.close()


def start_workers(redis_url: str, log_path: Path, processes: int = 2, timeout: float = 30, **env: str) -> Process:
    """``python -m workers --processes N`` with the test functions (``WORKER_MODULES`` in ``env`` overrides),
    once all N have published their catalogs."""
    proc = Process(
        ["-m", "workers", "--processes", str(processes)],
        {"REDIS_URL": redis_url, "WORKER_MODULES": TEST_MODULES, **env},
        log_path,
    )

    def ready() -> bool:
        proc.check()
        return len(live_workers(redis_url)) >= processes

    wait_until(ready, timeout, f"{processes} workers to publish catalogs")
    return proc


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_status(url: str) -> int:
    """The HTTP status at ``url``, or 0 while nothing listens there."""
    try:
        return http_get(url)[0]
    except OSError:
        return 0


def start_server(args: list[str], log_path: Path, url: str, what: str, timeout: float = 15) -> Process:
    """A helper server (a provider, a fake OpenAI), once an HTTP request to ``url`` gets any answer."""
    proc = Process(args, {}, log_path)
    wait_until(lambda: proc.check() or http_status(url), timeout, what)
    return proc


def start_provider(port: int, token: str, log_path: Path) -> Process:
    """The standalone simulated agent (``python -m gateway.providers.simulated``), as Deepgram would be reached."""
    args = ["-m", "gateway.providers.simulated", "--port", str(port), "--require-token", token]
    return start_server(args, log_path, f"http://127.0.0.1:{port}/v1/agent/converse", "the provider to listen")


class Gateway(Process):
    """``python -m gateway`` on a free loopback port, with the simulated agent unless ``env`` says otherwise."""

    def __init__(self, redis_url: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        super().__init__(
            ["-m", "gateway"],
            {"REDIS_URL": redis_url, "PORT": str(self.port), "HOST": "127.0.0.1", "PROVIDER": "simulated", **env},
            log_path,
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent/converse"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> Gateway:
        def ready() -> bool:
            self.check()
            return http_status(self.http + "/readyz") == 200

        wait_until(ready, timeout, "the gateway to be ready")
        return self


@contextmanager
def running_gateway(redis_url: str, log_path: Path, **env: str) -> Iterator[Gateway]:
    """A ready gateway for the ``with`` block (a fixture's life), stopped after it; a gateway that does not exit
    cleanly (code 0) fails the block, with its log."""
    gateway = Gateway(redis_url, log_path, **env).wait_ready()
    try:
        yield gateway
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
