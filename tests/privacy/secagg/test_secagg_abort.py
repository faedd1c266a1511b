"""Aborted secure rounds: the reason names the real cause (survivors against the threshold),
the clients that crashed stay in the round's record, and under distributed DP the run goes
on with the model unchanged and ends with a privacy report that matches its ledger."""

import itertools
import json

import numpy as np
import pytest

from fedcore.config import parse_config
from privacy.ledger import PrivacyLedger
from privacy.secagg.protocol import SecAggAbort, SecAggClient, SecAggServer
from privacy.secagg.quantize import encode, fixed_point
from simulations import runner
from simulations.faults import client_fails

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")


def abort_reason(n, drop_before_masking=(), drop_before_unmask=(), insecure_demo=False):
    """The reason a round among clients 1..n (complete graph, threshold 0.5) aborts."""
    fp = fixed_point(n, 1.0, 16)
    server = SecAggServer(7, fp, 0.5, None, seed=3, insecure_demo=insecure_demo)
    clients = {i: SecAggClient(i, 7, fp, 0.5, insecure_demo) for i in range(1, n + 1)}
    graph = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    inbox = server.route_shares(
        {i: c.share_keys(server.roster, graph[i]) for i, c in clients.items()}
    )
    rng = np.random.default_rng(0)
    with pytest.raises(SecAggAbort) as caught:
        survivors = server.collect_masked(
            {
                i: c.masked_input(encode(np.ones(3) / n, fp, rng), inbox[i])
                for i, c in clients.items()
                if i not in drop_before_masking
            }
        )
        server.unmask(
            {i: clients[i].unmask(survivors) for i in survivors if i not in drop_before_unmask}
        )
    return str(caught.value)


def test_too_few_survivors_are_reported_against_the_threshold():
    # 5 of 10 survive; each client's secrets need t = 6 of its 10 holders, unmasking t + 1
    reason = abort_reason(10, drop_before_masking=range(6, 11))
    assert "5 of client 1's 10 holders" in reason
    assert "below the 7 (t + 1, share threshold t = 6 of 10)" in reason


def test_an_insecure_demo_needs_only_the_threshold_of_survivors():
    reason = abort_reason(10, drop_before_masking=range(6, 11), insecure_demo=True)
    assert "below the 6 (t, share threshold t = 6 of 10)" in reason


def test_too_few_shares_at_unmasking_are_reported_against_the_threshold():
    # all 6 sent masked inputs, then 4 went silent: 2 shares of each seed, t = 4 needed
    reason = abort_reason(6, drop_before_unmask=range(3, 7))
    assert reason.startswith("unmask: 2 of client 1's 6 holders revealed a share")
    assert "below its share threshold t = 4 (2 of the 6 clients in the sum replied)" in reason


ROUNDS = 3
SETTINGS = {
    "seed": 0,
    "data": {"dataset": "digits", "num-clients": 6, "partition": "iid"},
    "model": {"hidden": [16]},
    "train": {"rounds": ROUNDS, "local-epochs": 1, "batch-size": 32, "lr": 0.05},
    "evaluate": {"fraction": 0.0},
    "secagg": {"mode": "full"},
    "privacy": {"dp": "distributed", "clip-norm": 1.0, "noise-multiplier": 1.0},
    "faults": {"client-failure-rate": 0.3, "crash-stage": "masked-input"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A distributed-DP run in which injected crashes at the masked input abort rounds."""
    cfg = parse_config(SETTINGS)
    result = runner.simulate(cfg, out=tmp_path_factory.mktemp("dist") / "run", progress=False)
    rounds = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    crashed = {r: {p for p in range(6) if client_fails(cfg, r, p)} for r in range(1, ROUNDS + 1)}
    return result, rounds, crashed


def test_the_fixture_run_aborts_some_rounds_and_aggregates_others(run):
    _, rounds, _ = run
    statuses = [r["status"] for r in rounds]
    assert "aborted" in statuses and "aggregated" in statuses


def test_an_aborted_distributed_dp_round_leaves_the_model_and_the_run_goes_on(run):
    result, rounds, _ = run
    assert result.summary["status"] == "completed" and len(rounds) == ROUNDS
    for before, r in itertools.pairwise(rounds):
        if r["status"] == "aborted":
            assert r["server-eval"] == before["server-eval"]  # the same model, evaluated again
    assert (result.path / "privacy_report.json").exists()


def test_an_aborted_round_is_recorded_with_the_protocol_s_reason(run):
    _, rounds, crashed = run
    for r in rounds:
        if r["status"] == "aborted":
            assert r["reason"].startswith(f"secure aggregation aborted in round {r['round']}: ")
            assert f"{len(crashed[r['round']])} of 6 clients failed before it" in r["reason"]


def test_every_injected_crash_is_in_its_round_s_record(run):
    _, rounds, crashed = run
    for r in rounds:
        named = {
            p
            for p in range(6)
            if any(f"client {p} crashed in round {r['round']}" in f for f in r["train-failures"])
        }
        assert named == crashed[r["round"]]


def test_an_aborted_round_spends_the_clients_noise_and_releases_nothing(run):
    result, rounds, _ = run
    ledger = PrivacyLedger.load(result.path / "ledger.jsonl")
    for r in rounds:
        events = [e for e in ledger.events if e.round == r["round"]]
        server = [e for e in events if e.client is None]
        # every client that trained noised its update and reported it with its first reply
        assert sorted(e.client for e in events if e.client is not None) == list(range(6))
        assert len(server) == (1 if r["status"] == "aggregated" else 0)
