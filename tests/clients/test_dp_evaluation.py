"""Under DP a client's evaluation reply (its test-set size, un-noised loss and accuracy) is
covered by no mechanism: the configuration refuses client evaluation, and a client asked to
evaluate anyway (a server that breaks the rules) refuses too."""

import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedcore import simulate
from fedcore.apps import make_client_app
from fedcore.arrays import to_record
from fedcore.cli import scenario_path
from fedcore.config import ConfigError, load_scenario, parse_config, to_dict
from fedcore.tasks import checked_task, get_task
from simulations.engines.inprocess import (
    InProcessGrid,
    deliver,
    make_contexts,
    node_ids,
    run_inprocess,
)

LOCAL_DP = {"dp": "local", "clip-norm": 1.0, "noise-multiplier": 1.0}


@pytest.mark.parametrize("dp", ["sample", "local", "client"])
def test_client_evaluation_under_dp_is_refused_before_the_run(dp):
    privacy = {"dp": dp, "clip-norm": 1.0, "noise-multiplier": 1.0}
    cfg = parse_config({"data": {"num-clients": 4}, "privacy": privacy})
    with pytest.raises(ConfigError, match=r"evaluate.fraction .* no DP mechanism covers"):
        checked_task(cfg)
    with pytest.raises(ConfigError, match=r"evaluate.fraction .* no DP mechanism covers"):
        simulate(cfg)


def test_an_algorithm_that_asks_no_client_to_evaluate_needs_no_evaluate_fraction_zero():
    privacy = {"dp": "client", "clip-norm": 50.0, "noise-multiplier": 1.0}
    cfg = load_scenario(scenario_path("iris-kmeans"), {"kmeans.init": "random"})
    cfg = parse_config(to_dict(cfg) | {"privacy": privacy, "evaluate": {"fraction": 1.0}})
    assert checked_task(cfg).evaluate_client is None
    records = []
    run_inprocess(cfg, records.append)
    assert all("evaluate" not in r for r in records)


def _evaluate_replies(cfg, dp_cfg=None):
    """Play a server that sends evaluation messages to every client of a DP run."""
    task = get_task(cfg.task)
    data = task.load_data(cfg)
    model = task.build_model(cfg, data, torch.Generator().manual_seed(0))
    app = make_client_app(dp_cfg or cfg)
    replies = []
    with InProcessGrid(cfg):  # Flower's Message needs the identity a Grid sets up
        for nid, context in make_contexts(cfg, node_ids(cfg.data.num_clients)).items():
            content = RecordDict(
                {
                    "arrays": to_record(model.state_dict()),
                    "config": ConfigRecord({"server-round": 1}),
                }
            )
            msg = Message(content, dst_node_id=nid, message_type=MessageType.EVALUATE)
            replies.append((deliver(app, msg, context), data.clients[nid - min(node_ids(1))]))
    return replies


def test_a_dp_client_asked_to_evaluate_anyway_sends_nothing_of_its_data():
    cfg = parse_config(
        {"data": {"num-clients": 4}, "evaluate": {"fraction": 0.0}, "privacy": LOCAL_DP}
    )
    for reply, _ in _evaluate_replies(cfg):
        assert reply.has_error() and "evaluates nothing" in reply.error.reason  # no metrics


def test_clear_evaluation_never_sends_a_client_level_dp_nodes_example_count():
    cfg = parse_config(
        {"data": {"num-clients": 4}, "privacy": LOCAL_DP | {"clear-evaluation": True}}
    )
    replies = _evaluate_replies(cfg)
    assert {len(client.y_test) for _, client in replies} != {1}
    for reply, _ in replies:
        assert reply.content["metrics"]["num-examples"] == 1
