"""Write a benchmark's table into its own marked section of benchmarks/RESULTS.md."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def update_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the text between ``<!-- begin:name -->`` and ``<!-- end:name -->`` (appending
    the section if it is new), stamped with today's date."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    stamp = f"_Measured {date.today().isoformat()}._"
    block = f"<!-- begin:{name} -->\n{stamp}\n\n{body.strip()}\n<!-- end:{name} -->"
    pattern = re.compile(
        rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    path.write_text(text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
