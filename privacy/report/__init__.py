"""Privacy-budget report of a run, built only from its ledger (and, for utility, its metrics).

``fedcore report RUN_DIR`` writes ``privacy_report.json``, ``privacy_report.md`` and a
self-contained ``privacy_report.html`` (plots embedded). Every number in them is recomputed
from ``ledger.jsonl``, so the report says exactly what ran, once the ledger has been checked
against the run (its seal in ``summary.json``, its config and rounds): a ledger that does not
match is refused with :class:`LedgerMismatch` naming the mismatch. A run without DP is
reported as "no differential privacy".

Modules: :mod:`.audit` (the ledger against the run), :mod:`.build` (the report as data),
:mod:`.render` (Markdown and HTML).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privacy.report.audit import LedgerMismatch
from privacy.report.build import ASSUMPTIONS, EVERY_CLIENT, build_report, report_of
from privacy.report.render import headline, to_html, to_markdown


def write_report(run_dir: Path, seal: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the three report files into ``run_dir`` and return the report (``seal``: see
    :func:`build_report`); :class:`LedgerMismatch` and no files if the ledger does not
    match the run."""
    run_dir = Path(run_dir)
    report = build_report(run_dir, seal)
    markdown = to_markdown(report)
    (run_dir / "privacy_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "privacy_report.md").write_text(markdown)
    (run_dir / "privacy_report.html").write_text(to_html(report, markdown))
    return report


__all__ = [
    "ASSUMPTIONS",
    "EVERY_CLIENT",
    "LedgerMismatch",
    "build_report",
    "headline",
    "report_of",
    "to_html",
    "to_markdown",
    "write_report",
]
