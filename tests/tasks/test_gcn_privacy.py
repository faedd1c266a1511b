"""FedGCN pre-communication against a curious client: what it can read of foreign features.

The attacker is a client after 2-hop pre-communication. It holds its own nodes' features and,
generously, the whole graph and every node's number of nonzero features; it receives the
aggregate rows of its nodes and their neighbours. It subtracts its own terms and solves for
the foreign features by least squares over every row it received (rows with one foreign
neighbour, differencing of rows whose foreign sets differ by one node, 2-hop rows).
"""

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse
import torch

from fedcore.config import RunConfig, parse_config
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid
from fedcore.graph_partition import split_nodes
from fedcore.tasks import gcn

GCN = {
    "task": "gcn",
    "data": {"dataset": "cora", "partition": "louvain"},
    "model": {"hidden": [16]},
}


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora", resolve_data_dir(None))


@pytest.fixture(scope="module")
def parts(cora):
    return split_nodes("louvain", cora.y, cora.edges, 3, 1.0, np.random.default_rng(0))


def _recovered(graph, parts, ax, d, client, clip):
    """Foreign nodes whose feature support the attacker reads exactly: one-foreign-neighbour
    rows by subtraction, and all received rows by least squares. Returns (subtraction, lsq)."""
    x = graph.x if clip is None else gcn.clip_features(graph.x, clip)
    n = graph.num_nodes
    a_hat = scipy.sparse.coo_matrix(
        (np.ones(2 * graph.edges.shape[1]), np.hstack([graph.edges, graph.edges[::-1]])), (n, n)
    ).tocsr() + scipy.sparse.identity(n, format="csr")
    own = np.zeros(n, bool)
    own[parts[client]] = True
    rows = np.flatnonzero(a_hat[parts[client]].sum(axis=0))  # what a 2-hop view holds
    foreign = np.flatnonzero(a_hat[rows].sum(axis=0).A1 * ~own)
    scale = 1 / np.sqrt(d)
    s = ax[rows] * np.sqrt(d[rows])[:, None]  # the released rows (A + I) D^-1/2 X
    residual = s - a_hat[rows][:, own] @ (x[own] * scale[own, None])  # its own terms removed
    b = (a_hat[rows][:, foreign] @ scipy.sparse.diags(scale[foreign])).toarray()
    gram = b.T @ b + 1e-9 * np.eye(len(foreign))  # least squares (a vanishing ridge: b may
    estimate = np.linalg.solve(gram, b.T @ residual)  # not have full column rank)

    def exact(v, guess):
        support = graph.x[v] > 0
        top = np.argsort(guess)[-support.sum() :]  # the attacker is told the support size
        return bool(support[top].all())

    single = np.flatnonzero(own[rows] & (np.count_nonzero(b, axis=1) == 1))
    lone = foreign[np.argmax(b[single] != 0, axis=1)]
    subtraction = {v for i, v in zip(single, lone, strict=True) if exact(v, residual[i])}
    lsq = {v for i, v in enumerate(foreign) if exact(v, estimate[i])}
    return subtraction, lsq


def test_exact_aggregates_reveal_foreign_features(cora, parts):
    """The attack works on the unprotected release (the code before the fix)."""
    ax, d = gcn.precommunicate(cora, parts, seed=0, clip=None, noise_multiplier=0.0)
    subtraction, lsq = _recovered(cora, parts, ax, d, client=0, clip=None)
    assert len(subtraction) > 20 and len(lsq) > 100


def test_noised_aggregates_reveal_no_foreign_features(cora, parts):
    """The default release (graph.precomm-epsilon's calibration): nothing read exactly."""
    ax, d = gcn.precommunicate(cora, parts, seed=0)
    subtraction, lsq = _recovered(cora, parts, ax, d, client=0, clip=1.0)
    assert not subtraction and not lsq


def test_one_node_moves_the_release_by_at_most_twice_the_clip(cora, parts):
    """Brute force of the sensitivity the noise is sized for: replace one node's features
    (the highest-degree node, whose features enter the most rows) by others."""
    degree = 1 + np.bincount(cora.edges.ravel(), minlength=cora.num_nodes)
    v = int(np.argmax(degree))
    x = gcn.clip_features(cora.x, 1.0)
    other = x.copy()
    other[v] = -x[v]  # as far as a clipped vector can move: 2 * clip
    release = [
        sum(gcn.neighbour_contribution(gcn.graph_part(g, p), degree)[:, :-1] for p in parts)
        for g in (dataclasses.replace(cora, x=y) for y in (x, other))
    ]
    assert np.linalg.norm(release[0] - release[1]) == pytest.approx(2.0, rel=1e-6)


def test_the_default_cora_scenario_releases_noised_aggregates_with_a_stated_epsilon():
    from fedcore.cli import scenario_path
    from fedcore.config import load_scenario
    from privacy.accounting import epsilon

    cfg = load_scenario(scenario_path("cora-gcn"), {})
    assert cfg.graph.mode == "precomm" and gcn.precomm_noise_multiplier(cfg) > 0
    report = gcn.precomm_report(cfg)
    event = gcn.precomm_event(cfg)
    assert report["epsilon"] == epsilon([event], cfg.privacy.delta)
    assert report["epsilon"] <= cfg.graph.precomm_epsilon


def test_no_noise_is_a_choice_stated_in_the_report():
    cfg = parse_config(GCN, {"graph.precomm-epsilon": 0.0})
    assert gcn.precomm_event(cfg) is None and gcn.precomm_report(cfg)["epsilon"] is None
    assert RunConfig(task="gcn").graph.precomm_epsilon > 0


def test_a_precomm_run_records_the_release_in_its_ledger_and_report(tmp_path):
    import json

    from fedcore.cli import scenario_path
    from fedcore.config import load_scenario
    from privacy.ledger import PrivacyLedger
    from simulations import runner

    cfg = load_scenario(scenario_path("cora-gcn"), {"train.rounds": 1, "data.num-clients": 3})
    runner.simulate(cfg, out=tmp_path / "run", progress=False)
    (event,) = PrivacyLedger.load(tmp_path / "run" / "ledger.jsonl").events
    assert event == gcn.precomm_event(cfg) and event.neighbouring == "node"
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    assert report["guarantee"]["node_feature_epsilon"] == pytest.approx(
        gcn.precomm_report(cfg)["epsilon"]
    )
    assert "each node's features" in (tmp_path / "run" / "privacy_report.md").read_text()


def test_a_client_view_reads_foreign_nodes_only_through_the_release(cora, parts):
    """The client's post-processing (:func:`gcn.shrink_release`) is given the whole graph
    object; replacing every foreign node's features, the release held fixed, must not change
    what the client trains and predicts on."""
    ax, d = gcn.precommunicate(cora, parts, seed=0, clip=4.0)
    own = np.zeros(cora.num_nodes, bool)
    own[parts[0]] = True
    scrambled = cora.x.copy()
    scrambled[~own] = np.random.default_rng(1).permutation(cora.x[~own])
    for hops, noise_std in [(2, 5.0), (2, 0.3), (2, 0.0), (1, 0.3)]:  # prior only, mixed, release
        views = [
            gcn.precomm_client(
                gcn.graph_part(g, parts[0]), ax, d, hops=hops, clip=4.0, noise_std=noise_std
            )
            for g in (cora, dataclasses.replace(cora, x=scrambled))
        ]
        first, second = (v.x_train.x.to_dense() for v in views)
        assert torch.equal(first, second)


def _shrink_reference(ax, own, d, clip, noise_std, min_weight=0.01):
    """Row by row, as the docstring states it."""
    out = np.empty_like(ax)
    for r in range(len(ax)):
        foreign = d[r] - own[r, -1]
        signal = clip**2 * foreign / d.mean()
        noise = noise_std**2 * ax.shape[1]
        w = signal / (signal + noise) if foreign > 0 else 0.0
        w = 0.0 if w < min_weight else w
        release = ax[r] * np.sqrt(d[r])
        prior = own[r, :-1] * (d[r] / own[r, -1] if own[r, -1] > 0 else 1.0)
        out[r] = (prior + w * (release - prior)) / np.sqrt(d[r])
    return out


@pytest.mark.parametrize("noise_std", [0.0, 0.05, 0.5, 50.0])
def test_shrinking_the_release_matches_its_row_by_row_definition(noise_std):
    rng = np.random.default_rng(0)
    d = rng.integers(1, 9, 30).astype(float)
    own = np.concatenate([rng.normal(size=(30, 5)), rng.integers(0, 1 + d)[:, None]], axis=1)
    ax = rng.normal(size=(30, 5)).astype(np.float32)
    got = gcn.shrink_release(ax, own, d, 1.0, noise_std)
    np.testing.assert_allclose(got, _shrink_reference(ax, own, d, 1.0, noise_std), rtol=1e-5)


def test_without_noise_the_release_is_used_and_under_heavy_noise_the_own_prior(cora, parts):
    exact, d = gcn.precommunicate(cora, parts, seed=0, clip=4.0, noise_multiplier=0.0)
    clipped = dataclasses.replace(cora, x=gcn.clip_features(cora.x, 4.0))
    own = gcn.neighbour_contribution(gcn.graph_part(clipped, parts[0]), d)
    np.testing.assert_allclose(gcn.shrink_release(exact, own, d, 4.0, 0.0), exact, atol=1e-3)
    noised, _ = gcn.precommunicate(cora, parts, seed=0, clip=4.0)  # epsilon 8
    std = gcn.share_stddev(gcn.precomm_noise_multiplier(RunConfig(task="gcn")), 4.0, 3) * np.sqrt(3)
    mine = gcn.shrink_release(noised, own, d, 4.0, std)
    held = own[:, -1] > 0  # the rows this client holds a term of: its prior, imputed
    prior = own[held, :-1] * (d[held] / own[held, -1])[:, None] / np.sqrt(d[held])[:, None]
    np.testing.assert_allclose(mine[held], prior, atol=1e-6)
    np.testing.assert_array_equal(mine[~held], 0.0)


def test_a_degrees_only_precommunication_releases_no_feature_and_spends_nothing(cora, parts):
    zeros, d = gcn.precommunicate(cora, parts, seed=0, clip=4.0, features=False)
    assert not zeros.any()
    np.testing.assert_array_equal(d, 1 + np.bincount(cora.edges.ravel(), minlength=2708))
    cfg = parse_config(GCN, {"graph.precomm-features": False})
    assert gcn.precomm_event(cfg) is None
    assert gcn.precomm_report(cfg) == {
        "event": None,
        "epsilon": 0.0,
        "delta": 0.0,
        "released": "degrees",
    }
    client = gcn.precomm_client(
        gcn.graph_part(cora, parts[0]), zeros, d, hops=1, clip=4.0, noise_std=math.inf
    )
    clipped = dataclasses.replace(cora, x=gcn.clip_features(cora.x, 4.0))
    own = gcn.neighbour_contribution(gcn.graph_part(clipped, parts[0]), d)[
        parts[0]
    ]  # its nodes' rows
    prior = own[:, :-1] * (d[parts[0]] / own[:, -1] / np.sqrt(d[parts[0]]))[:, None]
    np.testing.assert_allclose(client.x_train.x.to_dense().numpy(), prior, rtol=1e-5, atol=1e-7)
