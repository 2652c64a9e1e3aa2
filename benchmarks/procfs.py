"""What the benchmarks read from ``/proc``: CPU time and memory of the processes under load, their children.

Every process the load touches runs separately (started with the harness, ``tests/support/processes.py``), so
each can be measured on its own: CPU from ``/proc/<pid>/stat``, memory from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
