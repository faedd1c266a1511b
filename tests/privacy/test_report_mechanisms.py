"""A privacy report of a ledger holding more than Gaussians: counts released with Laplace and
discrete Gaussian noise, and a composed tree."""

import json

import pytest
from dp_accounting import dp_event

from privacy.accounting import epsilon
from privacy.ledger import DpEvent, PrivacyLedger
from privacy.report import write_report

DELTA = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")


def test_a_report_accounts_and_renders_count_releases(tmp_path):
    laplace = [DpEvent.laplace("count table", 4.0, 1, 1.0, "record", r, 0) for r in (1, 2)]
    gauss = [DpEvent.discrete_gaussian("count table", 3.0, 2, 1.0, "record", r, 1) for r in (1, 2)]
    composed = DpEvent(
        "sketch",
        dp_event.ComposedDpEvent([laplace[0].dp_event, gauss[0].dp_event]),
        "add-or-remove-one",
        "record",
        2,
        None,
        1.0,
        3.0,
    )
    PrivacyLedger((*laplace, *gauss, composed)).save(tmp_path / "ledger.jsonl")
    (tmp_path / "config.toml").write_text(f'[privacy]\ndelta = {DELTA}\naccountant = "rdp"\n')
    write_report(tmp_path)
    report = json.loads((tmp_path / "privacy_report.json").read_text())
    assert report["clients"]["0"]["epsilon"] == pytest.approx(epsilon(laplace, DELTA))
    assert report["clients"]["1"]["epsilon"] == pytest.approx(epsilon(gauss, DELTA))
    assert report["clients"]["all"]["epsilon"] == pytest.approx(epsilon([composed], DELTA))
    assert report["guarantee"]["neighbouring"] == ["record"]
    table = (tmp_path / "privacy_report.md").read_text()
    assert "| sketch | 3 | - | 1 | composed | record |" in table
    assert "| count table | 4 | 1 | 1 | none | record |" in table
