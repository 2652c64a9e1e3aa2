"""A tiny renderer for ``benchmarks/PERFORMANCE.template.md``: the prose stays Markdown, the numbers come from a run.

The file is the page, then (after a ``<!-- fragments ... -->`` line) named fragments, each introduced by
``<!-- fragment: NAME -->``: the sentences that appear only where a run measured what they describe. Values go
in through :class:`string.Template` placeholders (``$name``), strictly both ways: a placeholder without a value
and a value without a placeholder are errors, so the template and the code that fills it cannot drift apart
silently.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

PATH = Path(__file__).with_name("PERFORMANCE.template.md")
FRAGMENTS = re.compile(r"^<!-- fragments\b.*-->\n", re.M)
FRAGMENT = re.compile(r"^<!-- fragment: (\w+) -->\n", re.M)


def fill(template: string.Template, what: str, values: dict[str, object]) -> str:
    """``template`` with ``values``, each placeholder filled and each value used."""
    unused = set(values) - set(template.get_identifiers())
    if unused:
        raise ValueError(f"{what} has no placeholder for {', '.join(sorted(unused))}")
    try:
        return template.substitute(values)
    except KeyError as exc:
        raise ValueError(f"{what} needs a value for {exc.args[0]}") from None


@dataclass(frozen=True)
class MarkdownTemplate:
    page: string.Template
    fragments: dict[str, string.Template]

    @classmethod
    def parse(cls, text: str) -> MarkdownTemplate:
        found = FRAGMENTS.search(text)
        page, rest = (text[: found.start()], text[found.end() :]) if found else (text, "")
        parts = FRAGMENT.split(rest)  # [before the first marker, name, body, name, body, ...]
        bodies = {name: string.Template(body.strip("\n")) for name, body in zip(parts[1::2], parts[2::2], strict=True)}
        return cls(string.Template(page), bodies)

    @classmethod
    def load(cls, path: Path = PATH) -> MarkdownTemplate:
        return cls.parse(path.read_text())

    def render(self, **values: object) -> str:
        """The page, every placeholder filled."""
        return fill(self.page, "the page", values)

    def fragment(self, name: str, **values: object) -> str:
        """One fragment, filled (without a trailing newline: the caller places it)."""
        return fill(self.fragments[name], f"fragment {name!r}", values)
