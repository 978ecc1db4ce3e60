"""docs/benchmarks.md is made of sections, one per benchmark, each rewritten by its own run:
a run replaces its section between its markers and leaves the others as they are."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Each section below is written by one benchmark in `bench/`, with the command that produced it;
every figure in a section comes from that section's run. The machines are shared and noisy:
compare figures measured in the same run, not across sections.
"""


def section_write(name: str, markdown: str, *, doc: Path = DOC) -> None:
    """Put `markdown` in the section `name`, replacing what an earlier run wrote there."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = doc.read_text() if doc.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def raw_figures(result: object) -> list[str]:
    """The closing lines of a section: the run's figures as JSON, for anyone who wants more."""
    return ["Raw figures of this run:", "", "```json", json.dumps(result, indent=2), "```", ""]
