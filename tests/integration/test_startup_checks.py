"""Settings that would lose calls are refused at start: the process exits with code 2 and says why."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, TEST_MODULES

pytestmark = pytest.mark.integration


def start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOST": "127.0.0.1", "PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
def test_gateway_refuses_a_result_ttl_shorter_than_function_timeout(redis_server, processes: str):
    result = start(
        "gateway", REDIS_URL=redis_server.url, RESULT_TTL="5", FUNCTION_TIMEOUT="10", WEB_CONCURRENCY=processes
    )
    assert result.returncode == 2, result.stderr
    assert "RESULT_TTL=5 s is shorter than FUNCTION_TIMEOUT (10 s)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.attack("Redis failing quietly: half-open connections, lost messages, skewed clocks")
def test_workers_refuse_a_result_ttl_shorter_than_their_longest_function(redis_server):
    # Every test function declares a timeout over 4 s; the examples take FUNCTION_TIMEOUT.
    result = start(
        "workers", REDIS_URL=redis_server.url, RESULT_TTL="4", FUNCTION_TIMEOUT="3", WORKER_MODULES=TEST_MODULES
    )
    assert result.returncode == 2, result.stderr
    assert "RESULT_TTL=4 s is shorter than the timeout of function" in result.stderr
    assert int(re.search(r"set RESULT_TTL to at least (\d+)", result.stderr).group(1)) > 4  # type: ignore[union-attr]
    assert "Traceback" not in result.stderr
