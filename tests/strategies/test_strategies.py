"""fedcore strategies: Flower classes with seeded sampling and validated streaming aggregation."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from fedcore.config import STRATEGIES, RunConfig, parse_config
from fedcore.keys import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, PROXIMAL_MU
from simulations.engines.inprocess import InProcessGrid
from strategies import build_strategy

CFG = parse_config({"data": {"num-clients": 5}})
GLOBAL = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}


@pytest.fixture
def grid():
    with InProcessGrid(CFG) as g:
        yield g


def _arrays(d):
    return ArrayRecord({k: Array(v) for k, v in d.items()})


def _sent(strategy, grid, server_round=1):
    msgs = list(strategy.configure_train(server_round, _arrays(GLOBAL), ConfigRecord(), grid))
    grid.push_messages(msgs)  # assigns message ids, as a real Grid does
    return msgs


def _reply(msg, arrays, n):
    content = RecordDict({ARRAYS: _arrays(arrays), METRICS: MetricRecord({NUM_EXAMPLES: n})})
    return Message(content, reply_to=msg)


def _update(rng):
    return {k: rng.normal(size=v.shape).astype(np.float32) for k, v in GLOBAL.items()}


def test_fedavg_aggregate_equals_brute_force_weighted_mean(grid):
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(0)
    updates, sizes = [_update(rng) for _ in msgs], [3, 10, 1, 7, 5]
    agg, _ = strategy.aggregate_train(
        1, (_reply(m, u, n) for m, u, n in zip(msgs, updates, sizes, strict=True))
    )
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
    nan = _update(rng)
    nan["w"][0, 0] = np.nan
    wrong_shape = {"w": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)}
    replies = [
        _reply(msgs[0], good[0], 4),
        _reply(msgs[1], nan, 4),
        _reply(msgs[2], wrong_shape, 4),
        Message(Error(code=2, reason="client crashed"), reply_to=msgs[3]),
        _reply(msgs[4], good[1], 4),
    ]
    agg, _ = strategy.aggregate_train(1, iter(replies))
    np.testing.assert_allclose(agg["w"].numpy(), (good[0]["w"] + good[1]["w"]) / 2, rtol=1e-6)
    reasons = " | ".join(strategy.last_failures)
    assert len(strategy.last_failures) == 3
    assert "NaN" in reasons and "shape" in reasons and "client crashed" in reasons


def test_round_with_no_usable_update_returns_none(grid):
    strategy = build_strategy(CFG)
    msgs = _sent(strategy, grid)
    replies = [Message(Error(code=2, reason="down"), reply_to=m) for m in msgs]
    assert strategy.aggregate_train(1, replies) == (None, None)


def test_cohort_is_reproducible_from_seed_and_round(grid):
    cfg = parse_config({"data": {"num-clients": 5}, "train": {"fraction": 0.4}, "seed": 3})
    a, b = build_strategy(cfg), build_strategy(cfg)
    cohorts = [a.sample_cohort(grid, 0.4, 1, r, 0) for r in range(1, 6)]
    assert cohorts == [b.sample_cohort(grid, 0.4, 1, r, 0) for r in range(1, 6)]
    assert all(len(c) == 2 and len(set(c)) == 2 for c in cohorts)
    assert len({tuple(c) for c in cohorts}) > 1  # rounds draw different cohorts


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_is_a_flower_strategy(name):
    strategy = build_strategy(parse_config({"strategy": {"name": name}}))
    assert isinstance(strategy, flwr_strategy.FedAvg)
    assert type(strategy).__mro__[1].__module__.startswith("flwr.serverapp.strategy")


def test_fedprox_sends_the_proximal_weight(grid):
    cfg = parse_config(
        {"data": {"num-clients": 5}, "strategy": {"name": "fedprox", "proximal-mu": 0.3}}
    )
    msgs = _sent(build_strategy(cfg), grid)
    assert all(m.content[CONFIG][PROXIMAL_MU] == pytest.approx(0.3) for m in msgs)


def test_fedavgm_without_momentum_equals_fedavg(grid):
    cfg = parse_config(
        {"data": {"num-clients": 5}, "strategy": {"name": "fedavgm", "server-momentum": 0.0}}
    )
    rng = np.random.default_rng(2)
    updates = [_update(rng) for _ in range(5)]
    results = []
    for strategy in (build_strategy(cfg), build_strategy(CFG)):
        msgs = _sent(strategy, grid)
        agg, _ = strategy.aggregate_train(
            1, [_reply(m, u, 2) for m, u in zip(msgs, updates, strict=True)]
        )
        results.append(agg["w"].numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_fedmedian_takes_the_coordinate_median(grid):
    strategy = build_strategy(
        parse_config({"data": {"num-clients": 5}, "strategy": {"name": "fedmedian"}})
    )
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(3)
    updates = [_update(rng) for _ in msgs]
    agg, _ = strategy.aggregate_train(
        1, [_reply(m, u, 1) for m, u in zip(msgs, updates, strict=True)]
    )
    np.testing.assert_allclose(
        agg["w"].numpy(), np.median([u["w"] for u in updates], axis=0), rtol=1e-6
    )


def test_fedadam_moves_the_model_with_adaptive_steps(grid):
    cfg = parse_config({"data": {"num-clients": 5}, "strategy": {"name": "fedadam", "eta": 0.1}})
    strategy = build_strategy(cfg)
    msgs = _sent(strategy, grid)
    ones = {k: np.ones_like(v) for k, v in GLOBAL.items()}
    agg, _ = strategy.aggregate_train(1, [_reply(m, ones, 1) for m in msgs])
    w = agg["w"].numpy()
    # First Adam step from 0 towards 1: every coordinate moves by the same positive amount.
    assert np.all(w > 0) and np.all(w < 1) and np.allclose(w, w.flat[0])


def test_default_run_config_is_fedavg():
    assert type(build_strategy(RunConfig())).__name__ == "FedAvg"


@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_strategies_drop_corrupt_updates_too(grid, name):
    strategy = build_strategy(
        parse_config({"data": {"num-clients": 5}, "strategy": {"name": name, "trim-beta": 0.0}})
    )
    msgs = _sent(strategy, grid)
    rng = np.random.default_rng(4)
    updates = [_update(rng) for _ in msgs]
    updates[1]["w"][0, 0] = np.inf
    agg, _ = strategy.aggregate_train(
        1, [_reply(m, u, 1) for m, u in zip(msgs, updates, strict=True)]
    )
    assert np.all(np.isfinite(agg["w"].numpy()))
    assert len(strategy.last_failures) == 1 and "NaN or infinity" in strategy.last_failures[0]
