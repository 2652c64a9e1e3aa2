"""The reliability report: fault and fuzz tests record what they tried and what happened; this renders it.

Two halves:

- **Recording** (inside pytest). The ``reliability`` fixture hands each fault/fuzz test an :class:`Entry` to fill
  with counts as it runs (before its assertions, so a failing test still reports what it saw). The conftests of
  ``tests/faults`` and ``tests/fuzz`` import the fixture and :func:`record_outcome`; after every such test the
  whole report so far is written to ``test-artifacts/reliability.json``.
- **Attacks.** Any test marked ``@pytest.mark.attack("<attack class>")`` (integration tests of the security
  rules, wherever they live) lands in the record too, without a fixture: the hook below files it under its
  class, with its docstring as what was tried and its verdict as whether the defence held. The page shows one
  row per class.
- **Rendering** (``python -m tests.support.reliability [JSON] [MARKDOWN]``, run by ``make reliability``). It turns
  that JSON into ``docs/RELIABILITY.md``: a fixed threat model, then one table row per test and its raw figures.
  A failed test keeps its row, marked FAILED; a report with an unfinished test (a crashed run) is refused.

Nothing in the page is typed by hand except the threat model: every number comes from the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JSON_PATH = ROOT / "test-artifacts" / "reliability.json"
MARKDOWN_PATH = ROOT / "docs" / "RELIABILITY.md"


@dataclass
class Entry:
    """One fault or fuzz test: what it tried, how many times, and what the system did."""

    test: str
    """The pytest node id."""
    kind: str
    """``fault``, ``fuzz`` or ``attack``."""
    title: str
    """The test docstring's first line: the fault or hostile input in a few words."""
    tried: str = ""
    """How many: e.g. "540 calls on 10 sessions, 14 SIGKILLs"."""
    happened: str = ""
    """What the system did, built from measured figures by the test."""
    figures: dict[str, Any] = field(default_factory=dict)
    """Raw counts and timings, for the details section and for anyone reading the JSON."""
    attack: str = ""
    """The attack class of a test marked ``@pytest.mark.attack("<class>")``; such tests get a row per class."""
    outcome: str = "unfinished"
    """``passed`` or ``failed`` (set from pytest's report of the test body), ``unfinished`` until then."""
    seconds: float = 0.0


class Report:
    """Every entry of this pytest run, written out whole after each test (so a partial run leaves a valid file)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.entries: dict[str, Entry] = {}

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": environment(),
            "wall_seconds": round(time.time() - self.started, 1),
            "entries": [asdict(e) for e in self.entries.values()],
        }

    def write(self, path: Path = JSON_PATH) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)


REPORT = Report()
"""One per pytest process. Both conftests import the same fixture, so both append here."""


def environment() -> dict[str, Any]:
    """Where the figures were measured: they depend on the machine."""
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + local changes" if dirty else head


# --- pytest side ------------------------------------------------------------------------------------------------


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[Entry]:
    """The current test's report entry. Fill ``tried``, ``happened`` and ``figures``; the rest is automatic."""
    kind = "fuzz" if request.node.get_closest_marker("fuzz") else "fault"
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    entry = Entry(test=request.node.nodeid, kind=kind, title=doc.rstrip("."))
    REPORT.entries[entry.test] = entry
    yield entry
    REPORT.write()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Registered by tests/conftest.py: each report of a fault, fuzz or attack test lands in the record."""
    report = yield
    _attack_entry(item)
    record_outcome(item, report)
    if report.when == "teardown" and item.nodeid in REPORT.entries:
        # An entry's fixture wrote the file before the fixtures set up ahead of it were torn down (a gateway that
        # exits non-zero, say), and an attack test has no fixture: write again, or the page could call a failed
        # test passed.
        REPORT.write()
    return report


def _attack_entry(item: pytest.Item) -> None:
    """File an ``attack``-marked test under its class, creating its entry on its first report if no fixture did
    (a fault test that is also an attack keeps its row among the faults, and appears in its class's row)."""
    marker = item.get_closest_marker("attack")
    if marker is None:
        return
    entry = REPORT.entries.get(item.nodeid)
    if entry is None:
        doc = getattr(item, "function", None).__doc__  # type: ignore[union-attr]
        title = first_sentence(doc) if doc else item.originalname.removeprefix("test_").replace("_", " ")  # type: ignore[attr-defined]
        entry = REPORT.entries[item.nodeid] = Entry(test=item.nodeid, kind="attack", title=title)
    entry.attack = str(marker.args[0])


def first_sentence(doc: str, limit: int = 200) -> str:
    """A docstring's first sentence (it may run over several lines), without its full stop, at most ``limit``
    characters."""
    text = " ".join(doc.split())
    end = text.find(". ")
    sentence = (text if end < 0 else text[:end]).rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def record_outcome(item: pytest.Item, report: pytest.TestReport) -> None:
    """Copy pytest's verdict on the test body into the test's reliability entry."""
    entry = REPORT.entries.get(item.nodeid)
    if entry is None:
        return
    if report.when == "call":
        entry.outcome = "passed" if report.passed else "failed"
        entry.seconds = round(report.duration, 1)
    elif report.failed:  # setup or teardown broke: the body's figures cannot be trusted
        entry.outcome = "failed"


# --- rendering ----------------------------------------------------------------------------------------------------

THREAT_MODEL = """\
## Threat model

- **Browsers and other websites are untrusted.** A page from another origin, or one that rebinds its DNS name
  to 127.0.0.1, may try to drive a gateway; any HTTP caller may reuse another's call id. The gateway must not let
  any of them see, steer or forge a backend call (docs/BACKEND-PROXY.md, Threat model and defaults).
- **Clients are untrusted.** Anyone who reaches the gateway port (within the access policy) may send any frame:
  malformed JSON, wrong field types, huge or deeply nested messages, protocol-order violations, random binary,
  answers to calls that workers own. The gateway must refuse each one with a documented `Error`/`Warning` code
  or a documented close code (1008 policy, 1009 too big, 1011 provider trouble), and no session may affect
  another.
- **The provider is trusted for content, not for form.** It may send malformed or unexpected frames, duplicate
  or missing call ids, huge strings, or drop the connection at any moment. The gateway must not crash, must
  answer every backend call it accepted exactly once, and must end the client's session cleanly.
- **Infrastructure fails.** Worker processes die (OOM killer, `kill -9`), Redis restarts and loses everything
  (no persistence), a function hangs, the gateway is redeployed (SIGTERM). Every backend call must still be
  answered by its deadline, never twice, and a call that is not idempotent must never start twice.
- **Out of scope.** A malicious worker or Redis (they hold the secrets and are trusted), network-level floods
  (a load balancer's job), and a provider that lies about results.
"""


def render(data: dict[str, Any]) -> str:
    """The markdown page for a report. A failed test gets its row like any other, marked FAILED: the page says
    what the run saw. Raises ``ValueError`` for a report with no entries or an unfinished test (a crashed run)."""
    entries = [Entry(**e) for e in data["entries"]]
    if not entries:
        raise ValueError("the report has no entries: run the fault and fuzz tests first (make reliability)")
    unfinished = [e.test for e in entries if e.outcome not in ("passed", "failed")]
    if unfinished:
        raise ValueError("the run did not finish these tests: " + ", ".join(unfinished))
    failed = [e for e in entries if e.outcome == "failed"]
    env = data["environment"]
    verdict = f"{len(failed)} of {len(entries)} tests FAILED (marked below)" if failed else f"all {len(entries)} passed"
    lines = [
        "# Reliability",
        "",
        "<!-- Generated by `make reliability` from test-artifacts/reliability.json; do not edit by hand. -->",
        "",
        "What the attack tests (marked `attack`), the fault-injection tests (`tests/faults`) and the fuzz tests "
        "(`tests/fuzz`) did to real processes "
        "(redis-server, `python -m workers`, `python -m gateway`, a provider over WebSocket), and what happened. "
        "Every figure below comes from the run described here; `make reliability` repeats it.",
        "",
        f"Run: {data['generated_at']}, commit {env['commit']}, Python {env['python']} on {env['platform']}, "
        f"{env['cpus']} CPUs; {verdict}; {data['wall_seconds']:g} s in all.",
        "",
        THREAT_MODEL,
    ]
    lines += _attack_rows([e for e in entries if e.attack])
    for kind, heading in (("fault", "## Faults injected"), ("fuzz", "## Hostile input (fuzzing)")):
        chosen = [e for e in entries if e.kind == kind]
        if not chosen:
            continue
        lines += [heading, "", "| What was tried | How many | What happened | Result |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(e.title)} | {_cell(e.tried)} | {_cell(e.happened)} | "
            f"{'passed' if e.outcome == 'passed' else '**FAILED**'} in {e.seconds:g} s |"
            for e in chosen
        ]
        lines.append("")
    lines += ["## Figures", "", "The raw counts behind each row, as the tests recorded them.", ""]
    for e in entries:
        if e.kind == "attack":
            continue  # their rows say all there is
        lines += [f"### {e.title}", "", f"`{e.test}` ({e.outcome})", ""]
        lines += [f"- {key}: {_figure(value)}" for key, value in e.figures.items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _attack_rows(attacks: list[Entry]) -> list[str]:
    """One row per attack class: the tests that tried it, and whether every one of them held."""
    if not attacks:
        return []
    classes: dict[str, list[Entry]] = {}
    for e in attacks:
        classes.setdefault(e.attack, []).append(e)
    lines = [
        "## Attacks",
        "",
        "Each class of attack against the trust boundary (docs/BACKEND-PROXY.md, Threat model), tried by the tests "
        "marked `attack` (integration and fault tests against real processes, a few unit tests of the logic "
        "that decides); a class held when every one of its tests passed.",
        "",
        "| Attack class | Tried | Held |",
        "|---|---|---|",
    ]
    for attack, tests in classes.items():
        failed = [e for e in tests if e.outcome != "passed"]
        cases: dict[str, list[Entry]] = {}  # a parametrized test's cases share one mention
        for e in tests:
            cases.setdefault(e.test.split("::")[-1].split("[")[0], []).append(e)
        tried = "; ".join(
            f"{same[0].title} (`{name}`{f', {len(same)} cases' if len(same) > 1 else ''})"
            for name, same in cases.items()
        )
        count = f"{len(tests)} test{'s' if len(tests) > 1 else ''}"
        held = f"**NO**: {len(failed)} of {count} failed" if failed else f"yes ({count})"
        lines.append(f"| {_cell(attack)} | {_cell(tried)} | {held} |")
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_figure(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_figure(v) for v in value) or "none"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0]) if args else JSON_PATH
    target = Path(args[1]) if len(args) > 1 else MARKDOWN_PATH
    try:
        page = render(json.loads(source.read_text()))
    except (OSError, ValueError) as exc:
        print(f"reliability report not written: {exc}", file=sys.stderr)
        return 1
    target.write_text(page)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
