"""The reliability report (tests/support/reliability.py): a test pytest reports as failed must be written as
failed, whichever phase failed, or docs/RELIABILITY.md would call it passed; attack tests are grouped into one
row per attack class, which says when the class did not hold."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import reliability
from tests.support.reliability import Entry, Report, render


def report_phase(item: SimpleNamespace, when: str, outcome: str) -> None:
    """Run the makereport hook wrapper as pluggy does, handing it one phase's report."""
    report = SimpleNamespace(when=when, passed=outcome == "passed", failed=outcome == "failed", duration=1.0)
    wrapper = reliability.pytest_runtest_makereport(item, None)  # type: ignore[arg-type]
    next(wrapper)
    with pytest.raises(StopIteration):
        wrapper.send(report)


def test_a_teardown_failure_after_the_entry_was_written_reaches_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "reliability.json"
    report = Report()
    monkeypatch.setattr(report, "write", lambda target=path: Report.write(report, target))  # never the real file
    monkeypatch.setattr(reliability, "REPORT", report)
    item = SimpleNamespace(nodeid="tests/faults/test_x.py::test_y", get_closest_marker=lambda name: None)
    report.entries[item.nodeid] = Entry(test=item.nodeid, kind="fault", title="y")

    report_phase(item, "call", "passed")
    report.write()  # the reliability fixture's teardown: it writes the report
    report_phase(item, "teardown", "failed")  # then a fixture set up before it fails its teardown

    assert [e["outcome"] for e in json.loads(path.read_text())["entries"]] == ["failed"]


ENV = {"python": "3.11", "platform": "Linux", "cpus": 2, "commit": "abc1234"}


def page(*entries: Entry) -> str:
    return render(
        {"generated_at": "now", "environment": ENV, "wall_seconds": 1.0, "entries": [asdict(e) for e in entries]}
    )


def attack(test: str, attack_class: str, title: str, outcome: str = "passed") -> Entry:
    return Entry(test=f"tests/x.py::{test}", kind="attack", title=title, attack=attack_class, outcome=outcome)


def test_one_row_per_attack_class_listing_its_tests():
    text = page(
        attack("test_a", "Cross-site pages", "A foreign Origin is refused"),
        attack("test_b", "Cross-site pages", "A rebound Host is refused"),
        attack("test_c", "Forged results", "A client answer to a backend call is dropped."),
    )
    rows = [line for line in text.splitlines() if line.startswith("| Cross-site") or line.startswith("| Forged")]
    assert len(rows) == 2
    assert "A foreign Origin is refused (`test_a`); A rebound Host is refused (`test_b`)" in rows[0]
    assert rows[0].endswith("| yes (2 tests) |")
    assert "### Cross-site pages" not in text  # attack rows have no figures section


def test_a_class_with_a_failed_test_did_not_hold():
    text = page(
        attack("test_a", "Cross-site pages", "A foreign Origin is refused"),
        attack("test_b", "Cross-site pages", "A rebound Host is refused", outcome="failed"),
    )
    assert "| **NO**: 1 of 2 tests failed |" in text


def test_a_fault_test_marked_as_an_attack_shows_in_both_tables():
    fault = Entry(test="tests/faults/t.py::test_kill", kind="fault", title="A gateway killed", outcome="passed")
    fault.attack = "A gateway that dies mid-call"
    text = page(fault)
    assert "| A gateway that dies mid-call | A gateway killed (`test_kill`) | yes (1 test) |" in text
    assert "## Faults injected" in text and "### A gateway killed" in text
