"""The benchmark harness (``make bench``) still runs: its smallest case end to end, and the shape of its JSON.

No timing is asserted (the machine is shared and noisy); the point is that the suite, the scripted upstream,
the baselines and the report keep working as the code they measure changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"n", "p50", "p90", "p99", "max", "mean"}

pytestmark = pytest.mark.integration


def test_smoke_run_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out), "--no-report", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())

    counts = results["roundtrips"]["counts"]
    assert counts["enqueue"] == 1 and counts["worker_critical"] >= 1 and counts["per_call"] >= 3
    calls = results["calls"]
    for point in (calls["ws_hop"], calls["bare"]["1"], calls["naive_rq"]["1"], calls["gateway"]["1"]):
        assert set(point["summary"]) >= SUMMARY_KEYS and point["summary"]["n"] > 0
        assert point["quantiles"] and point["quantiles"][-1][0] == 1.0
    gateway = calls["gateway"]["1"]
    assert gateway["counts"]["errors"] == 0 and gateway["counts"]["lost"] == 0
    assert gateway["gateway_ms"]["n"] > 0 and set(gateway["cpu_ms_per_call"]) == {
        "gateway",
        "workers",
        "redis",
        "upstream",
    }
    for rtt in ("0ms", "40ms"):
        assert calls[f"prior_art_{rtt}"]["1"]["counts"]["errors"] == 0
    assert set(calls["breakdown"]["stages_ms"]) >= {"ws_hops", "queue_to_worker", "function"}
    assert "vfg-default" in results["rq_info"]

    capacity = results["capacity"]  # one worker process; smoke-sized bursts that any worker answers in time
    for burst in ("async_burst", "blocking_burst"):
        entry = capacity[burst]
        assert entry["counts"]["answered"] == entry["calls"] and entry["counts"]["errors"] == 0, entry
        assert entry["last_answer_ms"] is not None
    assert capacity["memory"]["idle_kb"] > 0 and capacity["memory"]["peak_kb"] >= capacity["memory"]["idle_kb"]
    assert capacity["sustained"]["counts"]["sent"] > 0

    pytest.importorskip("matplotlib")  # the bench extra; the report is checked when it is installed
    from benchmarks.report import write_report

    write_report(results, tmp_path / "PERFORMANCE.md", tmp_path / "latency.png")
    page = (tmp_path / "PERFORMANCE.md").read_text()
    assert "## Targets" in page and "KB per concurrent call" in page and "1 worker process: all ≤ 1.5 s" in page
    assert (tmp_path / "latency.png").stat().st_size > 10_000
