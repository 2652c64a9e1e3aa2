"""Start the real processes the integration tests talk to: workers and gateways, as a deployment runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from shared import keys
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
TEST_MODULES = "workers.examples,tests.support.functions"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process whose combined output goes to a log file the test can read afterwards."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
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
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [m.decode() for m in client.smembers(keys.CATALOG_INDEX)]
        raw = client.mget([keys.catalog(i) for i in ids]) if ids else []
        return [json.loads(r) for r in raw if r]
    finally:
        client.close()


def start_workers(redis_url: str, log_path: Path, processes: int = 2, **env: str) -> Process:
    proc = Process(
        ["-m", "workers", "--processes", str(processes)],
        {"REDIS_URL": redis_url, "WORKER_MODULES": TEST_MODULES, **env},
        log_path,
    )
    wait_until(lambda: len(live_workers(redis_url)) >= processes, 30, f"{processes} workers to publish catalogs")
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


class Gateway(Process):
    def __init__(self, redis_url: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        super().__init__(
            ["-m", "gateway"],
            {"REDIS_URL": redis_url, "PORT": str(self.port), "HOST": "127.0.0.1", "UPSTREAM": "simulated", **env},
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
            if self.popen.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.popen.returncode}:\n{self.log()}")
            try:
                return http_get(self.http + "/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, "the gateway to be ready")
        return self
