"""A privacy report of a ledger holding more than Gaussians: counts released with Laplace and
discrete Gaussian noise, and a composed tree."""

import pytest
from dp_accounting import dp_event

from privacy.accounting import epsilon
from privacy.ledger import DpEvent, PrivacyLedger
from privacy.report import report_of, to_markdown

DELTA = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")


def test_a_report_accounts_and_renders_count_releases():
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
    # the mechanisms' figures and table, from a ledger no one run of fedcore writes (the
    # check of a ledger against its run is tests/privacy/test_report_audit.py's)
    ledger = PrivacyLedger((*laplace, *gauss, composed))
    report = report_of(ledger, {"privacy": {"delta": DELTA, "accountant": "rdp"}}, [])
    assert report["clients"]["0"]["epsilon"] == pytest.approx(epsilon(laplace, DELTA))
    assert report["clients"]["1"]["epsilon"] == pytest.approx(epsilon(gauss, DELTA))
    assert report["clients"]["all"]["epsilon"] == pytest.approx(epsilon([composed], DELTA))
    assert report["guarantee"]["neighbouring"] == ["record"]
    table = to_markdown(report)
    assert "| sketch | 3 | - | 1 | composed | record |" in table
    assert "| count table | 4 | 1 | 1 | none | record |" in table
