"""The privacy report checks the ledger against its run before it states a guarantee: a
ledger deleted, emptied, cut short, edited or planted is refused, naming the mismatch (even
when the seal in summary.json is forged to match); a run without DP says so."""

import json
import shutil

import pytest

from fedcore.config import parse_config
from privacy.ledger import DpEvent, PrivacyLedger, ledger_seal
from privacy.report import LedgerMismatch, build_report, headline, write_report
from privacy.report.audit import mismatches
from simulations import runner

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")

SETTINGS = {
    "seed": 0,
    "data": {"dataset": "digits", "num-clients": 4, "partition": "iid"},
    "model": {"hidden": [16]},
    "train": {"rounds": 2, "local-epochs": 1, "fraction": 1.0, "batch-size": 32, "lr": 0.05},
    "evaluate": {"fraction": 0.0},
}
CLIENT_DP = {"dp": "client", "clip-norm": 1.0, "noise-multiplier": 0.5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    plain = runner.simulate(parse_config(SETTINGS), out=root / "plain", progress=False)
    dp = runner.simulate(
        parse_config(SETTINGS | {"privacy": CLIENT_DP}), out=root / "dp", progress=False
    )
    return plain.path, dp.path


@pytest.fixture
def dp_run(runs, tmp_path):
    return shutil.copytree(runs[1], tmp_path / "dp")


@pytest.fixture
def plain_run(runs, tmp_path):
    return shutil.copytree(runs[0], tmp_path / "plain")


def reseal(run_dir):
    """What a forger does next: make summary.json's seal match the edited ledger."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["ledger"] = ledger_seal(run_dir / "ledger.jsonl")
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_valid_dp_run_s_report_is_the_one_written_when_it_finished(dp_run):
    written = json.loads((dp_run / "privacy_report.json").read_text())
    assert build_report(dp_run) == written
    assert written["guarantee"]["differential_privacy"] is True
    assert written["guarantee"]["client_level_epsilon"] > 0


def test_a_run_without_dp_reports_no_differential_privacy(plain_run):
    report = write_report(plain_run)
    assert headline(report["guarantee"], report["delta"]) == "no differential privacy"
    assert "No differential privacy" in (plain_run / "privacy_report.md").read_text()
    assert "-DP" not in (plain_run / "privacy_report.md").read_text()


@pytest.mark.parametrize("damage", ["delete", "empty"])
def test_a_deleted_or_emptied_ledger_is_refused(dp_run, damage):
    ledger = dp_run / "ledger.jsonl"
    ledger.unlink() if damage == "delete" else ledger.write_text("")
    with pytest.raises(LedgerMismatch, match="round 1 aggregated, but its server-side release"):
        build_report(dp_run)


def test_a_truncated_ledger_is_refused_by_its_seal(dp_run):
    ledger = dp_run / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(lines[:-1]))
    with pytest.raises(LedgerMismatch, match=r"2 events, sha256 .* sealed; the file holds 1 "):
        build_report(dp_run)


def test_a_ledger_edited_to_more_noise_is_refused_by_its_seal(dp_run):
    ledger = PrivacyLedger.load(dp_run / "ledger.jsonl")
    more_noise = [
        DpEvent.gaussian(
            "gaussian", 2 * e.noise_multiplier, 1.0, 1, e.clip_norm, "none", "client", e.round, None
        )
        for e in ledger.events
    ]
    (dp_run / "ledger.jsonl").write_text(PrivacyLedger(tuple(more_noise)).to_jsonl())
    with pytest.raises(LedgerMismatch, match="differs from the ledger the run sealed"):
        build_report(dp_run)


def test_a_truncated_ledger_with_a_forged_seal_is_refused_by_the_rounds(dp_run):
    ledger = dp_run / "ledger.jsonl"
    ledger.write_text(ledger.read_text().splitlines(keepends=True)[0])
    reseal(dp_run)
    with pytest.raises(LedgerMismatch, match="round 2 aggregated, but its server-side release"):
        build_report(dp_run)


def test_a_ledger_planted_in_a_run_without_dp_is_refused(plain_run, runs):
    shutil.copy(runs[1] / "ledger.jsonl", plain_run / "ledger.jsonl")
    reseal(plain_run)
    with pytest.raises(LedgerMismatch, match=r"privacy\.dp = 'off' has the server release nothing"):
        build_report(plain_run)


def test_a_dp_run_without_a_seal_is_refused(dp_run):
    summary = json.loads((dp_run / "summary.json").read_text())
    del summary["ledger"]
    (dp_run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(LedgerMismatch, match="seal is missing"):
        build_report(dp_run)


def client_event(round, client, neighbouring="example"):
    return DpEvent.gaussian("dp-sgd", 1.0, 0.1, 5, 1.0, "poisson", neighbouring, round, client)


def rounds(*aggregated):
    return [
        {"round": r, "status": "aggregated", "train-clients": 3, "aggregated-clients": n}
        for r, n in enumerate(aggregated, start=1)
    ]


def test_sample_dp_needs_an_event_of_every_client_the_round_aggregated():
    ledger = PrivacyLedger((client_event(1, 0), client_event(1, 1), client_event(2, 0)))
    assert mismatches("sample", rounds(2, 1), ledger) == []
    (problem,) = mismatches("sample", rounds(2, 2), ledger)
    assert problem.startswith("round 2 aggregated 2 clients' updates, but the ledger holds the ")


def test_client_events_of_the_wrong_unit_round_or_client_are_named():
    ledger = PrivacyLedger((client_event(1, 0, "client"), client_event(3, 7), client_event(1, 0)))
    problems = mismatches("local", rounds(1), ledger, num_clients=4)
    assert "the ledger holds events of round 3, which metrics.jsonl does not" in problems
    assert "round 1: clients [0] have more than one event" in problems
    assert any("privacy.dp = 'local' protects 'local'" in p for p in problems)


def test_a_setup_event_needs_a_setup_in_round_one():
    setup = DpEvent.gaussian("gaussian", 2.0, 1.0, 1, 1.0, "none", "node", 0, None)
    (problem,) = mismatches("off", rounds(3), PrivacyLedger((setup,)))
    assert "no setup ran" in problem
    assert mismatches("off", [rounds(3)[0] | {"setup": {}}], PrivacyLedger((setup,))) == []
