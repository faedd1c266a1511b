"""Privacy-budget report of a run, built only from its ledger (and, for utility, its metrics).

``fedcore report RUN_DIR`` writes ``privacy_report.json``, ``privacy_report.md`` and a
self-contained ``privacy_report.html`` (plots embedded). Every number in them is recomputed
from ``ledger.jsonl``, so the report says exactly what ran.

Modules: :mod:`.build` (the report as data), :mod:`.render` (Markdown and HTML).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privacy.report.build import ASSUMPTIONS, EVERY_CLIENT, build_report
from privacy.report.render import headline, to_html, to_markdown


def write_report(run_dir: Path) -> dict[str, Any]:
    """Write the three report files into ``run_dir`` and return the report."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    markdown = to_markdown(report)
    (run_dir / "privacy_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "privacy_report.md").write_text(markdown)
    (run_dir / "privacy_report.html").write_text(to_html(report, markdown))
    return report


__all__ = [
    "ASSUMPTIONS",
    "EVERY_CLIENT",
    "build_report",
    "headline",
    "to_html",
    "to_markdown",
    "write_report",
]
