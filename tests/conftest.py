"""Hooks for every suite: fault, fuzz and ``attack``-marked tests record what they tried and what happened
(``tests/support/reliability.py``), wherever they live, so ``make reliability`` can render docs/RELIABILITY.md."""

from tests.support.reliability import pytest_runtest_makereport  # noqa: F401 - the reliability record's hook
