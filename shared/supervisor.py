"""A small process supervisor: N copies of one process, each replaced when it dies, stopped together.

``python -m workers`` runs its worker processes under it, and ``python -m gateway`` its gateway processes when
``WEB_CONCURRENCY`` asks for more than one. What it does, and why not leave it to the platform:

- one Procfile line scales the count, and a child that dies (OOM killer, a native crash, ``kill -9``) is
  replaced within a second, with a backoff if it keeps dying;
- a child exiting with :data:`EXIT_BAD_CONFIG` stops everything: restarting would fail the same way;
- SIGTERM or Ctrl-C is forwarded once to every child (for a worker a second signal would turn RQ's warm
  shutdown into a cold one); children still running after ``stop_grace`` seconds are killed.

Children run in their own process group (their target calls ``os.setpgrp()``), so a terminal's Ctrl-C reaches
only the supervisor. They are started with ``spawn``: no sockets, threads or locks inherited from the parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

EXIT_BAD_CONFIG = 2
"""A child's exit code for "restarting will not help" (a module that does not import, a refused setting)."""
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0
"""A child that lived this long is considered healthy again: its next restart is immediate-ish."""

log = logging.getLogger("supervisor")


class Supervisor:
    """Runs ``target(*args, index)`` in ``processes`` children named ``f"{kind}-{index}"``.

    ``on_death(process, index)`` runs when a child is found dead, before its restart (the workers use it to
    withdraw the dead one's catalog at once).
    """

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        processes: int,
        kind: str,
        *,
        on_death: Callable[[BaseProcess, int], None] | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        self.target = target
        self.args = args
        self.processes = processes
        self.kind = kind
        self.on_death = on_death
        self.stop_grace = stop_grace
        self.context = multiprocessing.get_context("spawn")
        self.children: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.stopping = False

    def start(self, index: int) -> None:
        process = self.context.Process(target=self.target, args=(*self.args, index), name=f"{self.kind}-{index}")
        process.start()
        self.children[index] = process
        self.started_at[index] = time.monotonic()
        log.info("started %s %d (pid %s)", self.kind, index, process.pid)

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Forward the stop to every child; a repeated signal is forwarded again."""
        log.info("%s received; stopping %d %ss", signal.Signals(signum).name, len(self.children), self.kind)
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
        """Restart dead children after a backoff; returns an exit code when restarting cannot help."""
        now = time.monotonic()
        for index, process in list(self.children.items()):
            if process.exitcode is None:
                continue
            if index not in self.restart_at:
                if process.exitcode == EXIT_BAD_CONFIG:
                    log.error("%s %d cannot start (bad configuration); stopping", self.kind, index)
                    return EXIT_BAD_CONFIG
                lived = now - self.started_at[index]
                delay = 0.5 if lived > STABLE_AFTER else min(self.backoff.get(index, 0.25) * 2, MAX_BACKOFF)
                self.backoff[index] = delay
                self.restart_at[index] = now + delay
                log.warning(
                    "%s %d (pid %s) died (%s); restarting in %g s", self.kind, index, process.pid, _how(process), delay
                )
                if self.on_death is not None:
                    self.on_death(process, index)
            elif now >= self.restart_at[index]:
                del self.restart_at[index]
                self.start(index)
        return None

    def wait_for_children(self) -> None:
        deadline = time.monotonic() + self.stop_grace
        for process in self.children.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for index, process in self.children.items():
            if process.exitcode is None:
                grace = self.stop_grace
                log.warning("%s %d (pid %s) did not stop within %g s; killing it", self.kind, index, process.pid, grace)
                process.kill()
                process.join(2)
        log.info("all %ss stopped", self.kind)


def _how(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
