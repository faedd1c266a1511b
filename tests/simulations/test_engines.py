"""The execution engines: same model on every engine, lazy in-order delivery, node state."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcore.config import parse_config
from fedcore.keys import METRICS, NUM_EXAMPLES
from simulations.engines.inprocess import InProcessGrid, run_inprocess
from strategies import build_strategy

SMALL = {
    "data": {"num-clients": 4},
    "train": {"rounds": 2, "local-epochs": 1},
    "model": {"hidden": [32]},
}


def _final(engine_fn, cfg):
    rounds = []
    arrays = engine_fn(cfg, rounds.append)
    return {k: v.numpy() for k, v in arrays.items()}, rounds


def test_one_and_two_workers_give_the_identical_model():
    one, _ = _final(run_inprocess, parse_config(SMALL))
    two, _ = _final(run_inprocess, parse_config({**SMALL, "engine": {"workers": 2}}))
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])


def test_workers_batching_messages_give_the_identical_model(monkeypatch):
    """Workers take several messages per task (here 2, so 7 clients on 2 workers make tasks
    of 2, 2 and a last partial one each); the replies still come back in send order."""
    from simulations.engines import inprocess

    monkeypatch.setattr(inprocess, "BATCH", 2)  # read by the server process only
    raw = {**SMALL, "data": {"num-clients": 7}}
    one, _ = _final(run_inprocess, parse_config(raw))
    two, _ = _final(run_inprocess, parse_config({**raw, "engine": {"workers": 2}}))
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])


def test_same_seed_same_model_and_other_seed_differs():
    a, _ = _final(run_inprocess, parse_config(SMALL))
    b, _ = _final(run_inprocess, parse_config(SMALL))
    c, _ = _final(run_inprocess, parse_config({**SMALL, "seed": 1}))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


# The Ray engine ends on the in-process engine's model: tests/simulations/test_ray_cluster.py
# (on a two-node Ray cluster, under secure aggregation).


def _counting_app(calls):
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append(context.node_id)
        seen = context.state.metric_records.get("seen", MetricRecord({"n": 0}))
        context.state["seen"] = MetricRecord({"n": int(seen["n"]) + 1})
        metrics = MetricRecord({NUM_EXAMPLES: 1, "times-seen": int(seen["n"]) + 1})
        return Message(
            RecordDict({"arrays": msg.content["arrays"], METRICS: metrics}), reply_to=msg
        )

    return app


def _train_messages(grid, cfg, server_round):
    arrays = ArrayRecord([np.zeros(2, np.float32)])
    return list(build_strategy(cfg).configure_train(server_round, arrays, ConfigRecord(), grid))


def test_replies_are_produced_lazily_in_send_order():
    cfg = parse_config({"data": {"num-clients": 3}})
    calls = []
    with InProcessGrid(cfg, client_app=_counting_app(calls)) as grid:
        msgs = _train_messages(grid, cfg, 1)
        replies = iter(grid.send_and_receive(msgs))
        assert calls == []  # nothing runs before the strategy asks for a reply
        first = next(replies)
        assert calls == [msgs[0].metadata.dst_node_id]
        assert first.metadata.src_node_id == msgs[0].metadata.dst_node_id
        assert [r.metadata.src_node_id for r in replies] == [
            m.metadata.dst_node_id for m in msgs[1:]
        ]


def test_node_state_persists_across_rounds():
    cfg = parse_config({"data": {"num-clients": 2}})
    with InProcessGrid(cfg, client_app=_counting_app([])) as grid:
        for server_round in (1, 2, 3):
            replies = list(grid.send_and_receive(_train_messages(grid, cfg, server_round)))
        assert [r.content[METRICS]["times-seen"] for r in replies] == [3, 3]


def test_client_exception_becomes_an_error_reply_and_the_run_goes_on():
    cfg = parse_config({**SMALL, "faults": {"client-failure-rate": 0.5}, "seed": 4})
    _, rounds = _final(run_inprocess, cfg)
    failures = [f for r in rounds for f in r["train-failures"]]
    assert failures and all("InjectedFault" in f for f in failures)
    assert len(rounds) == 2 and all("server-eval" in r for r in rounds)


def test_message_to_unknown_node_is_refused():
    cfg = parse_config({"data": {"num-clients": 2}})
    with InProcessGrid(cfg, client_app=_counting_app([])) as grid:
        msg = _train_messages(grid, cfg, 1)[0]
        msg.metadata.__dict__["_dst_node_id"] = 1
        with pytest.raises(ValueError, match="no node"):
            grid.push_messages([msg])


def test_each_node_gets_its_own_records_even_when_messages_share_them():
    """As over a real transport: a mod that edits its message cannot reach another node's
    (Flower's SecAgg+ setup sends one RecordDict to every node and its mod pops from it)."""
    cfg = parse_config(SMALL)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        stage = msg.content["config"].pop("stage", "missing")
        return Message(
            RecordDict({"metrics": MetricRecord({"seen": int(stage == "go")})}), reply_to=msg
        )

    shared = RecordDict({"config": ConfigRecord({"stage": "go"})})
    with InProcessGrid(cfg, client_app=app) as grid:
        messages = [
            Message(shared, dst_node_id=n, message_type="train") for n in grid.get_node_ids()
        ]
        replies = list(grid.send_and_receive(messages))
    assert [r.content["metrics"]["seen"] for r in replies] == [1] * len(messages)
