"""The development harness (``tests/support/processes.py``) that tests and benchmarks share: waiting, child
processes and their logs, failing fast when a process it waits for has died. No Redis, no gateway."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from shared.redis_server import free_port
from tests.support.processes import ROOT, Process, start_server, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(values), 5, "a value", interval=0.001) == "ready"


def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_until(lambda: False, 0.05, "the impossible", interval=0.01)


def test_python_arguments_run_in_the_repository_with_the_extra_environment(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd()); print(os.environ['HARNESS_PROBE'])"
    proc = Process(["-c", code], {"HARNESS_PROBE": "seen"}, tmp_path / "probe.log")
    assert proc.popen.wait(10) == 0
    assert proc.stop() == 0
    assert proc.log().splitlines() == [str(ROOT), "seen"]


def test_an_absolute_command_runs_as_is(tmp_path: Path) -> None:
    proc = Process(["/bin/echo", "plain"], {}, tmp_path / "echo.log")
    assert proc.popen.wait(10) == 0
    assert proc.stop() == 0
    assert proc.log() == "plain\n"


def test_stop_sends_the_signal_and_returns_the_exit_code(tmp_path: Path) -> None:
    proc = Process(["-c", "import time; print('up', flush=True); time.sleep(60)"], {}, tmp_path / "sleep.log")
    wait_until(lambda: "up" in proc.log(), 10, "the child to start")
    assert proc.stop(signal.SIGTERM) == -signal.SIGTERM


def test_check_raises_with_the_log_tail_once_the_process_exited(tmp_path: Path) -> None:
    proc = Process(["-c", "print('\\n'.join(map(str, range(100)))); raise SystemExit(3)"], {}, tmp_path / "x.log")
    proc.popen.wait(10)
    with pytest.raises(RuntimeError, match="exited with 3") as raised:
        proc.check()
    assert "99" in str(raised.value) and "\n0\n" not in str(raised.value)  # the tail, not the whole log
    proc.stop()


def test_start_server_fails_fast_when_the_server_dies(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 2"):
        start_server(["-c", "raise SystemExit(2)"], tmp_path / "dead.log", "http://127.0.0.1:9/", "a dead server")
    assert time.monotonic() - started < 10  # not the 15 s timeout


def test_start_server_returns_once_the_url_answers(tmp_path: Path) -> None:
    port = free_port()
    args = ["-m", "http.server", "--bind", "127.0.0.1", str(port)]
    proc = start_server(args, tmp_path / "http.log", f"http://127.0.0.1:{port}/", "the HTTP server")
    try:
        assert proc.popen.poll() is None
    finally:
        proc.stop()
