"""The reliability page groups attack tests into one row per attack class, and says when a class did not hold."""

from __future__ import annotations

from dataclasses import asdict

from tests.support.reliability import Entry, render

ENV = {"python": "3.11", "platform": "Linux", "cpus": 2, "commit": "abc1234"}


def page(*entries: Entry) -> str:
    return render(
        {"generated_at": "now", "environment": ENV, "wall_seconds": 1.0, "entries": [asdict(e) for e in entries]}
    )


def attack(test: str, title: str, tried: str, outcome: str = "passed") -> Entry:
    return Entry(test=f"tests/x.py::{test}", kind="attack", title=title, tried=tried, outcome=outcome)


def test_one_row_per_attack_class_listing_its_tests():
    text = page(
        attack("test_a", "Cross-site pages", "A foreign Origin is refused."),
        attack("test_b", "Cross-site pages", "A rebound Host is refused."),
        attack("test_c", "Forged results", "A client answer to a backend call is dropped."),
    )
    rows = [line for line in text.splitlines() if line.startswith("| Cross-site") or line.startswith("| Forged")]
    assert len(rows) == 2
    assert "A foreign Origin is refused (`test_a`); A rebound Host is refused (`test_b`)" in rows[0]
    assert rows[0].endswith("| yes (2 tests) |")
    assert "### Cross-site pages" not in text  # attack rows have no figures section


def test_a_class_with_a_failed_test_did_not_hold():
    text = page(
        attack("test_a", "Cross-site pages", "A foreign Origin is refused."),
        attack("test_b", "Cross-site pages", "A rebound Host is refused.", outcome="failed"),
    )
    assert "| **NO**: 1 of 2 tests failed |" in text
