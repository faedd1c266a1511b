"""Sample-level DP-SGD end to end: the ledger, the node state, the budget, the report."""

import json

import pytest
from opacus.accountants import RDPAccountant

from clients.privacy import dp_sgd_params
from fedcore.config import ConfigError, parse_config
from fedcore.keys import LEDGER
from fedcore.server import run_server
from fedcore.tasks import get_task
from privacy.accounting import epsilon
from privacy.ledger import DpEvent, PrivacyLedger
from simulations import runner
from simulations.engines.inprocess import InProcessGrid

DP = {
    "data": {"num-clients": 3},
    "model": {"hidden": [32]},
    "train": {"rounds": 2, "local-epochs": 1},
    "evaluate": {"fraction": 0.0},
    "privacy": {"dp": "sample", "noise-multiplier": 1.1, "clip-norm": 1.0},
}


def _direct_epsilon(events, delta):
    accountant = RDPAccountant()
    for e in events:
        for _ in range(e.steps):
            accountant.step(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate)
    return accountant.get_epsilon(delta)


def test_dp_run_writes_a_ledger_and_a_report_that_recompute(tmp_path):
    result = runner.simulate(parse_config(DP), out=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    ledger = PrivacyLedger.load(run / "ledger.jsonl")
    assert len(ledger.events) == 3 * 2 and ledger.clients() == [0, 1, 2]
    report = json.loads((run / "privacy_report.json").read_text())
    for client in ledger.clients():
        expected = _direct_epsilon(ledger.for_client(client).events, 1e-5)
        assert report["clients"][str(client)]["epsilon"] == pytest.approx(expected, rel=1e-6)
    assert report["guarantee"]["max_client_epsilon"] == pytest.approx(
        max(c["epsilon"] for c in report["clients"].values())
    )
    assert result.summary["privacy"]["max_client_epsilon"] > 0
    page = (run / "privacy_report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page  # self-contained
    assert "## Clients" in (run / "privacy_report.md").read_text()


def test_client_ledger_persists_in_the_node_state():
    cfg = parse_config(DP)
    with InProcessGrid(cfg) as grid:
        run_server(grid, cfg)
        for context in grid._contexts.values():
            events = context.state[LEDGER]["events"]
            assert [DpEvent.from_dict(json.loads(e)).round for e in events] == [1, 2]


def test_client_past_its_budget_declines_and_the_run_goes_on():
    base = {
        **DP,
        "data": {"num-clients": 3, "partition": "iid"},
        "train": {"rounds": 3, "local-epochs": 1},
    }
    cfg = parse_config(base)
    data = get_task("mlp").load_data(cfg)
    dp = dp_sgd_params(cfg, data.clients[0].num_train)  # iid: every client the same size
    event = DpEvent.gaussian(
        "dp-sgd", dp.noise_multiplier, dp.sample_rate, dp.steps(1), 1.0, "poisson", "example", 1, 0
    )
    one, two = _direct_epsilon([event], 1e-5), _direct_epsilon([event, event], 1e-5)
    cfg = parse_config({**base, "privacy": {**DP["privacy"], "budget-epsilon": (one + two) / 2}})
    rounds = []
    with InProcessGrid(cfg) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    assert rounds[0]["train-failures"] == []
    for later in rounds[1:]:
        assert len(later["train-failures"]) == 3
        assert all("privacy budget exhausted" in f for f in later["train-failures"])
    assert len(rounds) == 3 and "server-eval" in rounds[-1]


@pytest.mark.parametrize(
    ("privacy", "names"),
    [
        ({"dp": "sample", "noise-multiplier": 1.0}, "clip-norm"),
        ({"dp": "sample", "clip-norm": 1.0}, "noise"),
        ({"dp": "off", "noise-multiplier": 1.0}, "privacy.dp"),
        (
            {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0, "target-epsilon": 2.0},
            "not both",
        ),
    ],
)
def test_misconfigured_privacy_is_an_error_not_a_silent_no_op(privacy, names):
    with pytest.raises(ConfigError, match=names):
        parse_config({"privacy": privacy})


def _local_dp(**privacy):
    return parse_config(
        {
            "data": {"num-clients": 10},
            "model": {"hidden": [8]},
            "train": {"rounds": 20, "local-epochs": 1, "fraction": 0.2},
            "evaluate": {"fraction": 0.0},
            "privacy": {"dp": "local", "clip-norm": 1.0, "target-epsilon": 2.0} | privacy,
        }
    )


def test_calibration_plans_a_high_quantile_of_a_clients_rounds():
    from scipy.stats import binom

    from clients.privacy import planned_participations

    cfg = _local_dp()  # a client takes part in Binomial(20, 0.2) rounds: mean 4
    assert planned_participations(cfg) == binom.ppf(0.9, 20, 0.2) == 6
    assert planned_participations(_local_dp(**{"calibration-quantile": 0.5})) == 4


def test_no_client_ends_above_the_target_epsilon(tmp_path):
    """Calibrated for the median client, about a third of these clients would take part more
    often than planned; each declines once its next round would pass the target, its default
    budget, and the report says so."""
    cfg = _local_dp(**{"calibration-quantile": 0.5})
    runner.simulate(cfg, out=tmp_path / "run", progress=False)
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    assert max(c["epsilon"] for c in report["clients"].values()) <= 2.0
    assert report["guarantee"]["clients_over_target"] == []
    rounds = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    declined = [f for r in rounds for f in r["train-failures"] if "budget exhausted" in f]
    took_part = {c: v["rounds_participated"] for c, v in report["clients"].items()}
    assert declined or max(took_part.values()) <= 4  # declines happened where they had to


def test_distributed_dp_reports_the_unamplified_epsilon_against_the_server(tmp_path):
    """The server picks the cohort, so against it a client gets no sampling amplification:
    the report states each client's epsilon over the rounds it took part in beside the
    amplified figure, which holds only against observers of the released models."""
    cfg = parse_config(
        {
            "data": {"num-clients": 10},
            "model": {"hidden": [8]},
            "train": {"rounds": 4, "local-epochs": 1, "fraction": 0.5},
            "evaluate": {"fraction": 0.0},
            "secagg": {"mode": "full", "bound": 8.0},
            "privacy": {"dp": "distributed", "clip-norm": 1.0, "noise-multiplier": 1.0},
        }
    )
    runner.simulate(cfg, out=tmp_path / "run", progress=False)
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    g = report["guarantee"]
    assert g["against_every_party"] > 0 and g["against_release_observers"] > 0
    ledger = PrivacyLedger.load(tmp_path / "run" / "ledger.jsonl")
    for client in ledger.clients():  # one un-amplified release per round it took part in
        events = ledger.for_client(client).events
        assert {(e.sampling, e.neighbouring) for e in events} == {("none", "client")}
        assert report["clients"][str(client)]["epsilon"] == pytest.approx(epsilon(events, 1e-5))
    assert g["against_every_party"] == max(
        c["epsilon"] for k, c in report["clients"].items() if k != "all"
    )
    text = (tmp_path / "run" / "privacy_report.md").read_text()
    assert "Against every party, the server included" in text
    assert "Against observers of the released models only" in text


def test_a_run_whose_clients_have_all_spent_their_budget_completes(tmp_path):
    """Clients that decline at their budget are a budget spent as planned: the rounds they
    skip are empty, not failed, and the model trained within the budget is kept."""
    one = epsilon([DpEvent.gaussian("gaussian", 1.0, 1.0, 1, 1.0, "none", "local", 1, 0)], 1e-5)
    cfg = parse_config(
        {
            "data": {"num-clients": 3},
            "model": {"hidden": [8]},
            "train": {"rounds": 8, "local-epochs": 1},
            "evaluate": {"fraction": 0.0},
            "privacy": {
                "dp": "local",
                "clip-norm": 1.0,
                "noise-multiplier": 1.0,
                "budget-epsilon": one * 1.5,
            },
        }
    )
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["status"] == "completed"
    rounds = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["status"] for r in rounds] == ["aggregated"] + ["empty"] * 7
    assert (tmp_path / "run" / "model.pt").exists()


def test_an_unreachable_target_epsilon_is_a_clients_named_failure():
    """No noise reaches epsilon 1e-6 at delta 1e-5 (the accountant's conversion has a
    floor): the client says so in its error reply instead of crashing the run."""
    from clients.handlers import ClientInputError

    cfg = parse_config(
        {
            "evaluate": {"fraction": 0.0},
            "privacy": {"dp": "sample", "clip-norm": 1.0, "target-epsilon": 1e-6},
        }
    )
    with pytest.raises(ClientInputError, match="target-epsilon = 1e-06 is out of reach"):
        dp_sgd_params(cfg, 500)
