"""docs/PERFORMANCE.md's generator: prose from ``benchmarks/PERFORMANCE.template.md``, numbers from the run's JSON."""

from __future__ import annotations

import json
import string

import pytest

from benchmarks.report import render
from benchmarks.template import MarkdownTemplate
from tests.support.processes import ROOT

SAMPLE = """# Title

Value: $value.
```
$block
```
<!-- fragments: the rest is only filled in on demand -->
<!-- fragment: one -->
One is $one.
<!-- fragment: two -->

Two lines, $a

and $b.

"""


def test_the_page_ends_where_the_fragments_begin() -> None:
    parsed = MarkdownTemplate.parse(SAMPLE)
    assert parsed.render(value="7", block="x") == "# Title\n\nValue: 7.\n```\nx\n```\n"
    assert set(parsed.fragments) == {"one", "two"}


def test_fragments_are_filled_without_surrounding_blank_lines() -> None:
    parsed = MarkdownTemplate.parse(SAMPLE)
    assert parsed.fragment("one", one=1) == "One is 1."
    assert parsed.fragment("two", a="A", b="B") == "Two lines, A\n\nand B."


def test_a_template_without_fragments_is_all_page() -> None:
    parsed = MarkdownTemplate.parse("only $this\n")
    assert parsed.render(this="that") == "only that\n" and parsed.fragments == {}


@pytest.mark.parametrize(
    ("values", "error"),
    [({"value": "7"}, "needs a value for block"), ({"value": "7", "block": "x", "extra": "?"}, "no placeholder")],
)
def test_placeholders_and_values_must_match(values: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        MarkdownTemplate.parse(SAMPLE).render(**values)


def test_values_are_not_read_as_placeholders() -> None:
    assert MarkdownTemplate.parse(SAMPLE).fragment("one", one="$value") == "One is $value."


def test_the_repository_template_is_valid() -> None:
    template = MarkdownTemplate.load()
    for name, fragment in {"page": template.page, **template.fragments}.items():
        assert fragment.is_valid(), name  # no stray "$" (write "$$" for a dollar sign)
    assert isinstance(template.page, string.Template) and template.page.template.startswith("# Performance")


def test_performance_md_is_what_the_template_makes_of_its_json() -> None:
    """docs/PERFORMANCE.md is generated: after an edit of the template (or the tables), regenerate it with
    ``python -m benchmarks.report`` rather than editing it by hand."""
    results = json.loads((ROOT / "docs" / "performance-results.json").read_text())
    assert render(results, "performance-latency.png") == (ROOT / "docs" / "PERFORMANCE.md").read_text()


def test_a_run_without_optional_sections_still_renders() -> None:
    text = render({}, "latency.png")
    assert "## Targets" in text and "_not measured in this run_" in text and "$" not in text
