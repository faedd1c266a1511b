"""Simulated attacks: who is malicious, what each attack sends, and a defended run end to end."""

from __future__ import annotations

import dataclasses
from statistics import NormalDist

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedcore import seeding
from fedcore.apps import make_client_app
from fedcore.arrays import to_numpy, to_numpy_dict, to_record
from fedcore.config import ConfigError, parse_config
from fedcore.keys import STATISTICS
from fedcore.statistics import decode
from fedcore.tasks import get_algorithm, server_data
from simulations import attacks, runner
from simulations.engines.inprocess import FIRST_NODE_ID, InProcessGrid, make_contexts
from simulations.faults import simulation_client_app
from strategies.registry import build_strategy

finite = st.floats(-10, 10, allow_nan=False, width=64)


def _cfg(**attack):
    return parse_config(
        {
            "data": {"dataset": "digits", "num-clients": 6},
            "train": {"rounds": 2, "local-epochs": 1},
            "model": {"hidden": [8]},
            "evaluate": {"fraction": 0.0},
            "attack": {"num-malicious": 2, **attack},
        }
    )


def test_the_malicious_clients_are_a_function_of_the_seed_alone():
    cfg = _cfg(name="sign-flip")
    bad = attacks.malicious_clients(cfg)
    assert len(bad) == 2 and bad <= set(range(6))
    assert attacks.malicious_clients(_cfg(name="ipm")) == bad  # not of the attack
    drawn = {attacks.malicious_clients(dataclasses.replace(cfg, seed=s)) for s in range(8)}
    assert len(drawn) > 1


# -- the attacks as functions ------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 5)), elements=finite))
def test_alie_ipm_and_sign_flip_follow_their_formulas(benign):
    np.testing.assert_array_equal(attacks.sign_flip(benign[0]), -benign[0])
    mean, std = benign.mean(axis=0), benign.std(axis=0)
    np.testing.assert_allclose(attacks.alie(benign, 1.5), mean - 1.5 * std, atol=1e-12)
    np.testing.assert_allclose(attacks.ipm(benign, 0.1), -0.1 * mean, atol=1e-12)


def test_alie_z_is_baruchs_z_max():
    # n = 100, m = 20: s = floor(51) - 20 = 31 more clients for a majority; Phi^-1(0.69)
    assert attacks.alie_z(100, 20) == pytest.approx(NormalDist().inv_cdf(0.69))
    assert attacks.alie_z(100, 20) == pytest.approx(0.4959, abs=1e-4)
    with pytest.raises(ValueError, match="alie-z"):
        attacks.alie_z(10, 8)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 4)), elements=finite))
def test_minmax_gamma_is_the_largest_within_the_benign_max_pairwise_distance(benign):
    direction = -benign.std(axis=0)
    gamma = attacks.minmax_gamma(benign, direction, tolerance=1e-6)
    mean = benign.mean(axis=0)
    limit = max(np.linalg.norm(a - b) for a in benign for b in benign)

    def farthest(g):
        return max(np.linalg.norm(mean + g * direction - row) for row in benign)

    slack = 1e-9 * (1.0 + float(np.abs(benign).max()))  # the distances' float rounding
    assert farthest(gamma) <= limit * (1 + 1e-9) + slack
    if np.any(direction):
        assert farthest(gamma / (1 - 1e-6) * (1 + 1e-9)) > limit
    np.testing.assert_allclose(attacks.minmax(benign), mean + gamma * direction)


def test_label_flipping_maps_each_class_to_its_mirror():
    y = torch.arange(10)
    assert attacks.flip_labels(y, 10).tolist() == list(range(9, -1, -1))


# -- the mod on real train messages ---------------------------------------------------------
def _round_replies(cfg, app):
    """Round 1's train messages of ``cfg``'s real strategy, delivered to ``app``: one
    reply's values per partition id."""
    algo = get_algorithm(cfg.task)
    state = algo.init(cfg, server_data(algo, cfg), seeding.numpy_rng(cfg.seed, seeding.MODEL_INIT))
    with InProcessGrid(cfg, client_app=app) as grid:  # the server's identity, as in a run
        strategy = build_strategy(cfg)
        messages = list(strategy.configure_train(1, to_record(state), ConfigRecord(), grid))
    contexts = make_contexts(cfg, grid.get_node_ids())
    spec = algo.spec(cfg, state)
    out = {}
    for msg in messages:
        node = msg.metadata.dst_node_id
        out[node - FIRST_NODE_ID] = attacks.reply_values(app(msg, contexts[node]), spec)
    return out


@pytest.fixture(scope="module")
def honest():
    cfg = _cfg(name="sign-flip")
    return _round_replies(cfg, make_client_app(cfg))


@pytest.mark.parametrize("name", ["sign-flip", "scale", "ipm", "alie", "minmax", "gaussian"])
def test_an_attack_changes_the_malicious_replies_only_as_specified(honest, name):
    cfg = _cfg(name=name)
    bad = sorted(attacks.malicious_clients(cfg))
    replies = _round_replies(cfg, simulation_client_app(cfg))
    for pid in set(honest) - set(bad):
        np.testing.assert_array_equal(replies[pid], honest[pid])  # untouched
    benign = np.stack([honest[p] for p in bad])
    expected = {
        "sign-flip": {p: -honest[p] for p in bad},
        "scale": {p: 10.0 * honest[p] for p in bad},
        "ipm": dict.fromkeys(bad, -0.1 * benign.mean(axis=0)),
        "alie": dict.fromkeys(bad, attacks.alie(benign, attacks.alie_z(6, 2))),
        "minmax": dict.fromkeys(bad, attacks.minmax(benign)),
    }
    for pid in bad:  # the wire is float32: what the client sends, rounded once
        if name == "gaussian":
            noise = replies[pid] - honest[pid]
            assert 5 < noise.std() < 15  # N(0, 10^2)
        else:
            np.testing.assert_allclose(replies[pid], expected[name][pid], rtol=1e-5, atol=1e-6)


def test_label_flipping_clients_train_on_mirrored_labels(honest):
    cfg = _cfg(name="label-flip")
    bad = attacks.malicious_clients(cfg)
    replies = _round_replies(cfg, simulation_client_app(cfg))
    for pid in honest:
        same = np.array_equal(replies[pid], honest[pid])
        assert same == (pid not in bad)


def test_an_attack_refuses_secure_aggregation_dp_and_a_missing_count():
    with pytest.raises(ConfigError, match="go together"):
        parse_config({"attack": {"name": "ipm"}})
    with pytest.raises(ConfigError, match=r"privacy\.dp = 'off'"):
        parse_config(
            {
                "attack": {"name": "ipm", "num-malicious": 1},
                "privacy": {"dp": "local", "clip-norm": 1.0, "noise-multiplier": 1.0},
            }
        )
    with pytest.raises(ConfigError, match=r"attack\.scale applies only with"):
        parse_config({"attack": {"name": "ipm", "num-malicious": 1, "scale": 3.0}})
    with pytest.raises(ConfigError, match="already holds a majority"):
        parse_config({"data": {"num-clients": 10}, "attack": {"name": "alie", "num-malicious": 6}})


def test_defences_that_read_each_update_are_refused_under_secure_aggregation():
    base = {"secagg": {"mode": "full", "insecure-demo": True}, "data": {"num-clients": 5}}
    for strategy in (
        {"name": "bulyan"},
        {"name": "multikrum"},
        {"name": "centered-clipping"},
        {"server-clip-norm": 1.0},
        {"pre-aggregation": "nnm"},
    ):
        with pytest.raises(ConfigError, match="secure aggregation hides"):
            parse_config({**base, "strategy": strategy})
    with pytest.raises(ConfigError, match="4 f \\+ 3 = 11"):
        parse_config(
            {"data": {"num-clients": 10}, "strategy": {"name": "bulyan", "num-malicious": 2}}
        )


# -- a defended run end to end -----------------------------------------------------------------
def test_a_run_under_attack_holds_the_defences_output(tmp_path):
    """A boosted update (x 10) against multi-Krum, 2 rounds through the runner; the same rounds by
    hand from the same replies: the global model steps by the example-weighted mean of the
    n - f updates of least Krum score (brute force), and no malicious update is among them."""
    cfg = parse_config(
        {
            "data": {"dataset": "digits", "num-clients": 6},
            "train": {"rounds": 2, "local-epochs": 1},
            "model": {"hidden": [8]},
            "evaluate": {"fraction": 0.0},
            "attack": {"name": "scale", "num-malicious": 1},
            "strategy": {"name": "multikrum", "num-malicious": 1},
        }
    )
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["status"] == "completed"
    saved = torch.load(tmp_path / "run" / "model.pt")

    algo = get_algorithm(cfg.task)
    state = algo.init(cfg, server_data(algo, cfg), seeding.numpy_rng(cfg.seed, seeding.MODEL_INIT))
    strategy, bad, arrays = build_strategy(cfg), attacks.malicious_clients(cfg), to_record(state)
    with InProcessGrid(cfg) as grid:
        for server_round in (1, 2):
            arrays = _defended_round(cfg, strategy, grid, server_round, arrays, bad)
    for name, value in to_numpy_dict(arrays).items():
        np.testing.assert_array_equal(saved[name].numpy(), value)


def _defended_round(cfg, strategy, grid, server_round, arrays, bad):
    """One round by hand: multi-Krum by brute force on the replies, checked against what the
    strategy aggregates; returns the strategy's new global model."""
    algo = get_algorithm(cfg.task)
    spec = algo.spec(cfg, to_numpy_dict(arrays))
    messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
    replies = list(grid.send_and_receive(messages))
    pids = [r.metadata.src_node_id - FIRST_NODE_ID for r in replies]
    x = np.stack([attacks.reply_values(r, spec) for r in replies])
    n, f = len(x), 1
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    chosen = np.argsort(scores)[: n - f]
    assert not {pids[i] for i in chosen} & bad
    weights = np.array([_examples(r, spec) for r in replies])[chosen]
    step = (x[chosen] * weights[:, None]).sum(axis=0) / weights.sum()
    glob = to_numpy_dict(arrays)
    arrays, _ = strategy.aggregate_train(server_round, iter(replies))
    offset = 0
    for name, a in spec.arrays:
        if name in spec.weights:
            continue
        expected = glob[name] + step[offset : offset + a.size].reshape(a.shape)
        offset += a.size
        np.testing.assert_allclose(to_numpy_dict(arrays)[name], expected, atol=1e-6)
    return arrays


def _examples(reply, spec) -> float:
    """The number of examples a reply claims (its update's weight)."""
    (record,) = reply.content.array_records.values()
    return float(decode(to_numpy(record[STATISTICS]), spec, 1)["examples"])
