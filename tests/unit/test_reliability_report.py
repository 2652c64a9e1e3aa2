"""The reliability report's record of outcomes (tests/support/reliability.py): a test pytest reports as failed
must be written as failed, whichever phase failed, or docs/RELIABILITY.md would call it passed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import reliability
from tests.support.reliability import Entry, Report


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
    item = SimpleNamespace(nodeid="tests/faults/test_x.py::test_y")
    report.entries[item.nodeid] = Entry(test=item.nodeid, kind="fault", title="y")

    report_phase(item, "call", "passed")
    report.write()  # the reliability fixture's teardown: it writes the report
    report_phase(item, "teardown", "failed")  # then a fixture set up before it fails its teardown

    assert [e["outcome"] for e in json.loads(path.read_text())["entries"]] == ["failed"]
