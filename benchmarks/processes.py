"""Start and watch the real processes a benchmark runs against, each logging to its own file.

The system under test runs exactly as deployed: ``python -m workers`` and ``python -m gateway`` subprocesses
on a loopback ``redis-server``. The baselines get their own processes (plain ``rq worker``, a bare BLPOP
worker), and the scripted upstream (the "provider") runs in a process of its own too, so that every process
the load touches can be measured separately (CPU from ``/proc/<pid>/stat``, memory from ``/proc/<pid>/status``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from shared import keys
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
WORKER_MODULES = "workers.examples,benchmarks.functions"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process (``python <args>`` or an absolute command) whose output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = args if os.path.isabs(args[0]) else [sys.executable, *args]
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log_path.name}: exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def worker_pids(redis_url: str, function: str = "bench_noop") -> list[int]:
    """Pids of the live workers that advertise ``function`` (from their catalogs)."""
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [m.decode() for m in client.smembers(keys.CATALOG_INDEX)]
        catalogs = [json.loads(r) for r in (client.mget([keys.catalog(i) for i in ids]) if ids else []) if r]
        return [c["pid"] for c in catalogs if any(f["name"] == function for f in c["functions"])]
    finally:
        client.close()


def start_workers(redis_url: str, log_dir: Path, processes: int) -> Process:
    proc = Process(
        ["-m", "workers", "--processes", str(processes)],
        log_dir / f"workers-{processes}.log",
        {"REDIS_URL": redis_url, "WORKER_MODULES": WORKER_MODULES},
    )
    wait_until(lambda: proc.check() or len(worker_pids(redis_url)) >= processes, 60, "workers")
    return proc


def start_upstream(log_dir: Path) -> tuple[Process, int]:
    port = free_port()
    proc = Process(["-m", "benchmarks.upstream", "--port", str(port)], log_dir / "upstream.log")
    wait_until(lambda: proc.check() or "READY" in proc.log_path.read_text(), 30, "the scripted upstream")
    return proc, port


class Gateway(Process):
    def __init__(self, redis_url: str, upstream_port: int, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        super().__init__(
            ["-m", "gateway"],
            log_dir / "gateway.log",
            {
                "REDIS_URL": redis_url,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "UPSTREAM": "deepgram",
                "DEEPGRAM_URL": f"ws://127.0.0.1:{upstream_port}/v1/agent/converse",
                "DEEPGRAM_API_KEY": "benchmark",
                "MAX_SESSIONS": "5000",
                # The prior-art scenario POSTs /function-call from one address, closed loop, at hundreds of calls
                # a second: the per-address request rate must not shape the baseline (sessions send far fewer).
                "CLIENT_MESSAGE_RATE": "100000",
                **env,
            },
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/agent/converse"

    def wait_ready(self, timeout: float = 30) -> Gateway:
        def ready() -> bool:
            self.check()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, timeout, "the gateway")
        return self


# --- /proc readings -------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (every process, ours or not), from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the worker processes of a supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def spawned_children(pid: int) -> list[int]:
    """Children of a supervisor that run its target (not multiprocessing's resource tracker, also a child)."""
    found = []
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(child)
        except OSError:
            continue
    return found


class CpuMeter:
    """CPU seconds used by groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                try:
                    total += os.times().user + os.times().system if pid == os.getpid() else cpu_seconds(pid)
                except OSError:
                    continue
            out[name] = total
        return out

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        end = self._read()
        self.used = {name: end[name] - self._start.get(name, 0.0) for name in end}
        return self.used
