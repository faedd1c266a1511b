"""The run's strategy: a Flower Strategy composed around an algorithm (FedAvg on task mlp
here), with seeded cohort sampling and replies checked one by one.

(Moved from the model-update strategies, which subclassed Flower's: the same behaviours on
the strategy every run now uses.)"""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from fedcore import optimizers
from fedcore.arrays import from_numpy
from fedcore.config import STRATEGIES, RunConfig, parse_config
from fedcore.keys import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, STATISTICS
from fedcore.statistics import contribution
from fedcore.tasks.fedavg import SERVER, STEPS
from simulations.engines.inprocess import InProcessGrid
from strategies import build_strategy
from strategies.statistics import StatisticsStrategy

CFG = parse_config({"data": {"num-clients": 5}})
GLOBAL = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


@pytest.fixture
def grid():
    with InProcessGrid(CFG) as g:
        yield g


def _arrays(d):
    return ArrayRecord({k: Array(v) for k, v in d.items()})


def _state(strategy):
    """GLOBAL and the server optimizer's buffers (zero), as FedAvg's init lays them out."""
    name = strategy.cfg.strategy.name
    buffers = optimizers.buffers(strategy.cfg.strategy) if name in optimizers.OPTIMIZERS else ()
    state = dict(GLOBAL) | {
        f"{SERVER}{b}/{k}": np.zeros_like(v) for b in buffers for k, v in GLOBAL.items()
    }
    return state | ({STEPS: np.zeros((), np.float32)} if buffers else {})


def _sent(strategy, grid, server_round=1):
    arrays = _arrays(_state(strategy))
    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    grid.push_messages(msgs)  # assigns message ids, as a real Grid does
    return msgs


def _wire(strategy, update, n):
    """A client's wire vector for ``update`` from ``n`` examples (as clients/statistics.py
    builds it: the update times its weight, then the weight)."""
    stats = {k: np.asarray(v, np.float64) for k, v in update.items()}
    spec = strategy.spec_of(_arrays(_state(strategy)))
    return contribution(stats | {"examples": np.array(float(n))}, spec)


def _reply(msg, wire, n):
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({STATISTICS: from_numpy(np.asarray(wire))}),
            METRICS: MetricRecord({NUM_EXAMPLES: n}),
        }
    )
    return Message(content, reply_to=msg)


def _update(rng):  # entries well within secagg.bound (1), which clips them
    return {k: rng.normal(0.0, 0.1, v.shape).astype(np.float32) for k, v in GLOBAL.items()}


def _aggregate(strategy, msgs, updates, sizes):
    replies = [
        _reply(m, _wire(strategy, u, n), n) for m, u, n in zip(msgs, updates, sizes, strict=True)
    ]
    return strategy.aggregate_train(1, iter(replies))[0]


def test_fedavg_aggregate_equals_brute_force_weighted_mean(grid):
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(0)
    updates, sizes = [_update(rng) for _ in msgs], [3, 10, 1, 7, 5]
    agg = _aggregate(strategy, msgs, updates, sizes)
    for k in GLOBAL:
        expected = sum(
            n * u[k].astype(np.float64) for u, n in zip(updates, sizes, strict=True)
        ) / sum(sizes)
        np.testing.assert_allclose(agg[k].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert strategy.last_failures == []


def test_bad_replies_are_rejected_and_the_rest_aggregated(grid):
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(1)
    good = [_update(rng) for _ in range(2)]
    nan = _wire(strategy, _update(rng), 4)
    nan[0] = np.nan
    replies = [
        _reply(msgs[0], _wire(strategy, good[0], 4), 4),
        _reply(msgs[1], nan, 4),
        _reply(msgs[2], np.zeros(5), 4),  # not the state's shape
        Message(Error(code=2, reason="client crashed"), reply_to=msgs[3]),
        _reply(msgs[4], _wire(strategy, good[1], 4), 4),
    ]
    agg, _ = strategy.aggregate_train(1, iter(replies))
    np.testing.assert_allclose(agg["w"].numpy(), (good[0]["w"] + good[1]["w"]) / 2, rtol=1e-6)
    reasons = " | ".join(strategy.last_failures)
    assert len(strategy.last_failures) == 3
    assert "not finite" in reasons and "shape" in reasons and "client crashed" in reasons


def test_round_with_no_usable_update_returns_none(grid):
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    replies = [Message(Error(code=2, reason="down"), reply_to=m) for m in msgs]
    assert strategy.aggregate_train(1, replies) == (None, None)


def test_cohort_is_reproducible_from_seed_and_round(grid):
    cfg = parse_config({"data": {"num-clients": 5}, "train": {"fraction": 0.4}, "seed": 3})
    a, b = build_strategy(cfg).cohort, build_strategy(cfg).cohort
    cohorts = [a.sample(grid, 0.4, 1, r, 0) for r in range(1, 6)]
    assert cohorts == [b.sample(grid, 0.4, 1, r, 0) for r in range(1, 6)]
    assert all(len(c) == 2 and len(set(c)) == 2 for c in cohorts)
    assert len({tuple(c) for c in cohorts}) > 1  # rounds draw different cohorts


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_name_drives_rounds_as_a_flower_strategy(name):
    """Composition, not inheritance from Flower's FedAvg: the five verbs of Flower's
    Strategy around the algorithm, whichever server optimizer or robust rule it names."""
    strategy = build_strategy(parse_config({"strategy": {"name": name}}))
    assert isinstance(strategy, Strategy) and isinstance(strategy, StatisticsStrategy)
    assert strategy.algorithm.name == "mlp" and name in strategy.algorithm.strategies


def test_messages_carry_the_round_and_the_run_config_stays_with_the_nodes(grid):
    """The training message holds the state and the round; FedProx's mu is read by each
    node from the run config, not sent by the server."""
    cfg = parse_config(
        {"data": {"num-clients": 5}, "strategy": {"name": "fedprox", "proximal-mu": 0.3}}
    )
    msgs = _sent(build_strategy(cfg), grid, server_round=4)
    assert len(msgs) == 5 and all(m.content[CONFIG]["server-round"] == 4 for m in msgs)
    assert all(set(m.content[ARRAYS]) == set(GLOBAL) for m in msgs)


def test_fedavgm_without_momentum_equals_fedavg(grid):
    cfg = parse_config(
        {"data": {"num-clients": 5}, "strategy": {"name": "fedavgm", "server-momentum": 0.0}}
    )
    rng = np.random.default_rng(2)
    updates = [_update(rng) for _ in range(5)]
    results = []
    for strategy in (build_strategy(cfg), build_strategy(CFG)):
        msgs = _sent(strategy, grid)
        results.append(_aggregate(strategy, msgs, updates, [2] * 5)["w"].numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_fedmedian_takes_the_coordinate_median(grid):
    strategy = build_strategy(
        parse_config({"data": {"num-clients": 5}, "strategy": {"name": "fedmedian"}})
    )
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(3)
    updates = [_update(rng) for _ in msgs]
    agg = _aggregate(strategy, msgs, updates, [1] * 5)
    np.testing.assert_allclose(
        agg["w"].numpy(), np.median([u["w"] for u in updates], axis=0), rtol=1e-6
    )


def test_fedadam_moves_the_model_with_adaptive_steps(grid):
    cfg = parse_config({"data": {"num-clients": 5}, "strategy": {"name": "fedadam", "eta": 0.1}})
    strategy = build_strategy(cfg)
    msgs = _sent(strategy, grid)
    ones = {k: np.ones_like(v) for k, v in GLOBAL.items()}
    agg = _aggregate(strategy, msgs, [ones] * 5, [1] * 5)  # (1 is secagg.bound: not clipped)
    w = agg["w"].numpy()
    # First Adam step from 0 towards 1: every coordinate moves by the same positive amount.
    assert np.all(w > 0) and np.all(w < 1) and np.allclose(w, w.flat[0])


def test_default_run_config_is_fedavg_on_task_mlp():
    strategy = build_strategy(RunConfig())
    assert strategy.cfg.strategy.name == "fedavg" and strategy.algorithm.name == "mlp"


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_strategies_drop_corrupt_updates_too(grid, name):
    strategy = build_strategy(
        parse_config({"data": {"num-clients": 5}, "strategy": {"name": name, "trim-beta": 0.0}})
    )
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(4)
    wires = [_wire(strategy, _update(rng), 1) for _ in msgs]
    wires[1][0] = np.inf
    agg, _ = strategy.aggregate_train(
        1, [_reply(m, w, 1) for m, w in zip(msgs, wires, strict=True)]
    )
    assert np.all(np.isfinite(agg["w"].numpy()))
    assert len(strategy.last_failures) == 1 and "not finite" in strategy.last_failures[0]


@pytest.mark.parametrize("forged", [float("nan"), -1e9, [1, 2]])
def test_a_forged_example_count_is_rejected_not_a_crash_or_a_wiped_mean(grid, forged):
    """A client writes its num-examples metric: a list used to raise out of aggregate_train
    (one client ended the run) and NaN erased every client's training metrics."""
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(5)
    replies = [_reply(m, _wire(strategy, _update(rng), 4), 4) for m in msgs]
    for r in replies:
        r.content[METRICS]["loss"] = 0.5
    replies[0].content[METRICS][NUM_EXAMPLES] = forged
    agg, metrics = strategy.aggregate_train(1, iter(replies))
    assert agg is not None and metrics["loss"] == pytest.approx(0.5)
    (failure,) = strategy.last_failures
    assert "num-examples" in failure


def test_a_forged_evaluation_weight_is_rejected(grid):
    from strategies.cohort import evaluation_mean

    msgs = _sent(build_strategy(CFG), grid)
    replies = [
        Message(RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: n, "accuracy": 0.8})}), reply_to=m)
        for m, n in zip(msgs[:2], [10, float("nan")], strict=True)
    ]
    record, failures = evaluation_mean(replies)
    assert record["accuracy"] == pytest.approx(0.8) and len(failures) == 1


@pytest.mark.parametrize(
    ("claimed", "message"), [(2.0**20, "beyond 5 x its bound"), (-1000.0, "negative weight")]
)
def test_a_count_no_honest_cohort_could_sum_to_is_caught_in_the_secure_sum(grid, claimed, message):
    """Under secure aggregation the server sees only the sum: a client that encodes a count
    of 2^20 examples (the encoding holds up to 2^20 x its bound of 10^4) or a negative one,
    to outweigh or flip the others, moves the sum past what 5 honest clients could send."""
    from privacy.secagg.aggregator import SecureSumReply

    cfg = parse_config({"data": {"num-clients": 5}, "secagg": {"mode": "full"}})
    strategy = build_strategy(cfg)
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(6)
    wires = [_wire(strategy, _update(rng), 100) for _ in msgs]
    wires[0][-1] = claimed  # the count entry, as the server decodes it
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({STATISTICS: from_numpy(np.sum(wires, axis=0))}),
            METRICS: MetricRecord({NUM_EXAMPLES: 500}),
        }
    )
    reply = SecureSumReply(content, reply_to=msgs[0])
    reply.clients = tuple(m.metadata.dst_node_id for m in msgs)
    assert strategy.aggregate_train(1, [reply]) == (None, None)
    (failure,) = strategy.last_failures
    assert message in failure
