"""``python -m benchmarks`` (``make bench``): run the suite, write the JSON results, PERFORMANCE.md and the plot.

    python -m benchmarks            # the full suite, about 6 minutes on two cores
    python -m benchmarks --quick    # every section, small and short, into benchmarks/out/quick/
    python -m benchmarks --smoke --json /tmp/r.json --no-report   # seconds: what the harness test runs

Everything runs on loopback against real processes: a ``redis-server`` started for the run (never the one at
REDIS_URL), ``python -m workers``, ``python -m gateway`` and the scripted upstream. Logs and raw profiles
go to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.suite import Plan, Suite
from shared.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "performance-results.json"
DEFAULT_DOC = ROOT / "docs" / "PERFORMANCE.md"
DEFAULT_PLOT = ROOT / "docs" / "performance-latency.png"


def machine(redis_url: str) -> dict[str, Any]:
    """What the numbers were taken on: they mean little without it."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT)
    client = redis.Redis.from_url(redis_url)
    version = client.info("server")["redis_version"]
    client.close()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "redis_server": version,
        "commit": commit.stdout.strip() + ("+local changes" if dirty.stdout.strip() else ""),
    }


async def run(plan: Plan, out: Path) -> dict[str, Any]:
    with RedisServer() as server:
        assert server.process is not None
        results: dict[str, Any] = {"machine": machine(server.url), "plan": plan.__dict__}
        suite = Suite(plan, server.url, server.process.pid, out)
        started = time.monotonic()
        try:
            for section in plan.sections:
                step = getattr(suite, section)
                value = step() if section == "roundtrips" else await step()
                if section == "calls":
                    results["rq_info"] = value.pop("rq_info", "")
                results[section] = value
        finally:
            suite.close()
        results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        results["machine"]["suite_seconds"] = round(time.monotonic() - started)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="every section, small and short")
    size.add_argument("--smoke", action="store_true", help="the smallest case only (harness test)")
    parser.add_argument("--json", type=Path, help=f"where the results go ({DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--doc", type=Path, help=f"the generated document ({DEFAULT_DOC.relative_to(ROOT)})")
    parser.add_argument("--plot", type=Path, help=f"the latency plot ({DEFAULT_PLOT.relative_to(ROOT)})")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--sections", help="comma-separated subset of " + ",".join(Plan.sections) + " (while working on one of them)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="logs and raw profiles")
    args = parser.parse_args(argv)
    # A quick run must not replace the full run's document: its outputs default to benchmarks/out/quick/.
    quick_dir = args.out / "quick"
    args.json = args.json or (quick_dir / DEFAULT_JSON.name if args.quick or args.smoke else DEFAULT_JSON)
    args.doc = args.doc or (quick_dir / DEFAULT_DOC.name if args.quick or args.smoke else DEFAULT_DOC)
    args.plot = args.plot or (quick_dir / DEFAULT_PLOT.name if args.quick or args.smoke else DEFAULT_PLOT)
    plan = Plan.smoke() if args.smoke else Plan.quick() if args.quick else Plan()
    if args.sections:
        unknown = set(args.sections.split(",")) - set(Plan.sections)
        if unknown:
            parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
        plan = dataclasses.replace(plan, sections=tuple(args.sections.split(",")))
    results = asyncio.run(run(plan, args.out))
    results["mode"] = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.json}")
    if not args.no_report:
        from benchmarks.report import write_report

        write_report(results, args.doc, args.plot)
        print(f"report: {args.doc}, plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
