"""``make smoke``: without keys it skips cleanly; its scenarios pass against the simulated agent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, Gateway
from tests.support.smoke import KEYS, SKIPPED, run_scenarios

pytestmark = pytest.mark.integration


def test_smoke_without_keys_says_it_skipped_and_succeeds() -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEYS.values()}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == SKIPPED == "skipped: no DEEPGRAM_API_KEY / OPENAI_API_KEY"


async def test_smoke_scenarios_pass_against_the_simulated_agent(gateway: Gateway) -> None:
    results = await run_scenarios(gateway.url)
    assert not [outcome for outcome in results.values() if outcome.startswith("FAILED")], results
    assert "Paris" in results["weather"]
    assert results["barge_in"] == "cancelled"  # the simulated agent cancels calls in flight when the user speaks
