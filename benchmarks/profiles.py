"""Where the CPU goes: sample the gateway and a worker with py-spy while load runs, and summarise the stacks.

py-spy attaches to a running process from outside (no code change, no restart) and records its stacks
``rate`` times a second. We keep the collapsed stacks (one line per distinct stack with its count; speedscope
and ``flamegraph.pl`` draw them) and reduce them to a table of the functions with the most *inclusive*
samples (time in the function and in what it calls), under readable labels, for PERFORMANCE.md. Only samples
taken while the process holds the GIL are kept (``--gil``): Python CPU, not threads waiting on sockets. When
py-spy cannot attach (no ptrace permission in some containers) the profile is skipped and the document says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy binary: next to this Python (a virtualenv run without activation), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start(pid: int, out: Path, seconds: float, rate: int = 200) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); None without py-spy."""
    binary = py_spy()
    if binary is None:
        return None
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
         "--format", "raw", "--nonblocking", "--gil", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes] | None, out: Path) -> dict[str, Any]:
    """Wait for the sampler and summarise the stacks. ``out`` stays: https://speedscope.app opens it."""
    if proc is None:
        return {"error": "py-spy is not installed (pip install -e '.[bench]')"}
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"}
    return summarise(read_collapsed(out))


def read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def label(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``module.func``, with the package kept for library code."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return f"{module}.{match['func']}"


def summarise(stacks: Counter[tuple[str, ...]], top: int = 40) -> dict[str, Any]:
    """Sample counts, the share spent idle (waiting in epoll/select/socket reads), and the top functions by
    inclusive share of the *busy* samples."""
    total = sum(stacks.values())
    idle_markers = (
        "select (selectors.py",
        "_run_once (asyncio",
        "wait (threading.py",
        "recv_into",
        "_worker (concurrent",
    )
    busy: Counter[tuple[str, ...]] = Counter()
    idle = 0
    for stack, count in stacks.items():
        leaf = stack[-1] if stack else ""
        if any(m in leaf for m in idle_markers) or leaf.startswith(("select ", "poll ", "epoll")):
            idle += count
        else:
            busy[stack] += count
    busy_total = sum(busy.values()) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in busy.items():
        for name in {label(f) for f in stack}:
            inclusive[name] += count
        if stack:
            own[label(stack[-1])] += count
    return {
        "samples": total,
        "busy_share": round(sum(busy.values()) / total, 3) if total else 0.0,
        "top_inclusive": [[name, round(n / busy_total, 3)] for name, n in inclusive.most_common(top)],
        "top_self": [[name, round(n / busy_total, 3)] for name, n in own.most_common(15)],
    }
