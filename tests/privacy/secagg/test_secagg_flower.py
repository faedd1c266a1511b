"""Secure aggregation over Flower: same model as plain FedAvg, dropouts, aborts, refusals."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedcore.arrays import to_record
from fedcore.config import ConfigError, parse_config
from fedcore.keys import ARRAYS, CONFIG, SERVER_ROUND
from privacy.plan import dp_plan
from simulations.engines.inprocess import InProcessGrid, run_inprocess

SMALL = {
    "data": {"num-clients": 6},
    "train": {"rounds": 3, "local-epochs": 1},
    "model": {"hidden": [16]},
    "evaluate": {"fraction": 0.0},
}


def run(settings, engine=run_inprocess):
    rounds = []
    arrays = engine(parse_config(SMALL | settings), rounds.append)
    return {k: v.numpy() for k, v in arrays.items()}, rounds


@pytest.mark.parametrize("mode", ["full", "sparse"])
def test_secure_aggregation_gives_the_plain_fedavg_model(mode):
    plain, plain_rounds = run({})
    secure, secure_rounds = run({"secagg": {"mode": mode, "degree": 4}})
    for k in plain:  # 6 clients, resolution 2^-20, weights num-examples / 10^4
        np.testing.assert_allclose(secure[k], plain[k], atol=5e-4)
    acc = [r["server-eval"]["accuracy"] for r in (plain_rounds[-1], secure_rounds[-1])]
    assert acc[0] == pytest.approx(acc[1], abs=0.02)
    assert set(secure_rounds[-1]["secagg-seconds"]) == {
        "train",
        "share-keys",
        "masked-input",
        "unmask",
    }


@pytest.mark.parametrize("stage", ["train", "share-keys", "masked-input", "unmask"])
def test_dropouts_at_every_stage_are_recovered(stage):
    """A client that drops before sending its masked input is left out of the sum (as if it
    had failed to train); one that drops while unmasking is still in it: its mask is
    removed with the others' shares. Either way the model is plain FedAvg's over those."""
    faults = {"client-failure-rate": 0.2, "crash-stage": stage}
    more = {"data": {"num-clients": 10}}
    secure, rounds = run({"secagg": {"mode": "full"}, "faults": faults} | more)
    failures = [f for r in rounds for f in r["train-failures"]]
    assert failures and all(f"dropped out at {stage}" in f for f in failures)
    in_sum = stage == "unmask"
    plain, _ = run(more if in_sum else {"faults": {"client-failure-rate": 0.2}} | more)
    for k in plain:
        np.testing.assert_allclose(secure[k], plain[k], atol=5e-4)


def test_too_many_dropouts_abort_the_round_and_keep_the_model():
    cfg = {
        "secagg": {"mode": "full"},
        "faults": {"client-failure-rate": 0.9, "crash-stage": "unmask"},
    }
    before, _ = run(
        {"train": {"rounds": 0 + 1, "local-epochs": 1}, "faults": {"client-failure-rate": 1.0}}
    )
    after, rounds = run(cfg | {"train": {"rounds": 1, "local-epochs": 1}})
    reasons = rounds[0]["train-failures"]
    assert reasons and all("secure aggregation aborted" in r for r in reasons)
    for k in before:  # no round happened in either: the initial model
        np.testing.assert_array_equal(after[k], before[k])


def test_client_refuses_a_plain_training_message_under_secure_aggregation():
    cfg = parse_config(SMALL | {"secagg": {"mode": "full"}})
    with InProcessGrid(cfg) as grid:
        from fedcore.tasks import get_algorithm, server_data  # the state the run would send

        algorithm = get_algorithm(cfg.task)
        state = algorithm.init(cfg, server_data(algorithm, cfg), np.random.default_rng(0))
        node = sorted(grid.get_node_ids())[0]
        msg = Message(
            RecordDict({ARRAYS: to_record(state), CONFIG: ConfigRecord({SERVER_ROUND: 1})}),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
        )
        (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "refusing to send an unmasked update" in reply.error.reason


def test_client_level_dp_composes_with_secure_aggregation():
    privacy = {"dp": "client", "clipping": "client", "clip-norm": 1.0, "noise-multiplier": 0.01}
    _, rounds = run({"secagg": {"mode": "full"}, "privacy": privacy})
    assert all(len(r["privacy-events"]) == 1 for r in rounds)
    assert rounds[-1]["train-failures"] == []


def _distributed_dp_rounds(tolerance):
    privacy = {
        "dp": "distributed",
        "clip-norm": 1.0,
        "noise-multiplier": 0.5,
        "dropout-tolerance": tolerance,
    }
    settings = {"secagg": {"mode": "full", "bound": 8.0}, "privacy": privacy}
    faults = {"client-failure-rate": 0.3}
    _, rounds = run(settings | {"faults": faults, "data": {"num-clients": 10}})
    return rounds


def test_distributed_dp_releases_no_sum_with_less_noise_than_planned():
    """Playing the dropouts: each client's share is sized for the whole cohort (tolerance 0),
    so a round that lost a client would carry less noise than accounted: not released."""
    rounds = _distributed_dp_rounds(0.0)
    assert any(r["train-failures"] for r in rounds)  # the seed makes clients fail
    for r in rounds:
        server_events = [e for e in r["privacy-events"] if e["client"] is None]
        if r["train-failures"]:
            assert server_events == []
            assert any("not released" in f for f in r["train-failures"])
        else:
            assert [e["noise_multiplier"] for e in server_events] == [0.5]


def test_distributed_dp_records_the_noise_the_surviving_clients_added():
    """With tolerance 0.5, shares are sized for 5 of the 10 clients: every released sum of
    k >= 5 carries z * sqrt(k / 5) >= z, which is what the ledger records."""
    rounds = _distributed_dp_rounds(0.5)
    for r in rounds:
        (event,) = [e for e in r["privacy-events"] if e["client"] is None]
        in_sum = r["train-clients"] - len(r["train-failures"])
        assert event["noise_multiplier"] == pytest.approx(0.5 * (in_sum / 5) ** 0.5)
        assert event["noise_multiplier"] >= 0.5 and event["neighbouring"] == "client"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strategy": {"name": "krum"}}, "needs each client's update"),
        (
            {"privacy": {"dp": "client", "clip-norm": 1.0, "noise-multiplier": 1.0}},
            "clipping = 'client'",
        ),
        ({"secagg": {"mode": "full", "bound": 1e6, "frac-bits": 40}}, "could overflow"),
        (
            {"secagg": {"mode": "off"}, "faults": {"crash-stage": "unmask"}},
            "needs secure aggregation",
        ),
    ],
)
def test_secure_aggregation_misconfiguration_is_refused(settings, message):
    raw = {"secagg": {"mode": "full"}} | settings
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


# Secure aggregation on the Ray engine's actors: tests/simulations/test_ray_cluster.py.


def test_distributed_dp_encodes_the_noise_whatever_the_bound():
    """A small secagg.bound clips the update's entries, never the clients' noise shares: the
    encoding's range is the clipped update plus 8 standard deviations of the share (it was
    refused when the range was the bound alone)."""
    from privacy.secagg.encoding import statistics_bound
    from strategies import build_strategy

    privacy = {"dp": "distributed", "clip-norm": 1.0, "noise-multiplier": 1.0}
    cfg = parse_config(SMALL | {"secagg": {"mode": "full", "bound": 1.0}, "privacy": privacy})
    share = dp_plan(cfg).client_noise_std(1.0)
    spec = build_strategy(cfg).spec_of(to_record({"w": np.zeros(3, np.float32)}))
    assert spec.bound == 1.0 and statistics_bound(spec.bound, cfg) >= 1.0 + 8 * share


def test_clients_can_send_no_training_metrics_in_the_clear():
    """secagg.clear-metrics = false: a training reply holds keys and nothing else of the
    client's data (no loss, time or example count); the weighted mean is the same, its
    weights coming from the sum."""
    from fedcore.apps import make_client_app
    from fedcore.server import run_server

    settings = {"secagg": {"mode": "full", "clear-metrics": False}, "train": {"rounds": 1}}
    cfg = parse_config(SMALL | settings)
    replies, rounds = [], []

    def spy(msg, context, call_next):
        reply = call_next(msg, context)
        if msg.content[CONFIG].get("secagg-stage") == "train":
            replies.append(reply)
        return reply

    with InProcessGrid(cfg, client_app=make_client_app(cfg, [spy])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    assert len(replies) == 6 and all(len(r.content["metrics"]) == 0 for r in replies)
    assert "train-loss" not in rounds[0]["train"] and rounds[0]["train-failures"] == []
    clear, _ = run(settings | {"secagg": {"mode": "full"}})
    hidden, _ = run(settings)
    for k in clear:
        np.testing.assert_array_equal(hidden[k], clear[k])
