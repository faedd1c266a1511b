"""The GCN task: normalisation, pre-communication through secure aggregation, training."""

import numpy as np
import pytest
import torch

from fedcore.config import ConfigError, parse_config
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid
from fedcore.graph_partition import split_nodes
from fedcore.tasks import checked_task, gcn
from simulations import runner
from simulations.engines.inprocess import run_inprocess


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora", resolve_data_dir(None))


def test_normalisation_equals_the_dense_reference():
    edges = np.array([[0, 0, 1], [1, 2, 3]])
    a = np.zeros((4, 4))
    a[edges[0], edges[1]] = a[edges[1], edges[0]] = 1
    a += np.eye(4)
    d = a.sum(axis=1) ** -0.5
    np.testing.assert_allclose(
        gcn.normalized_adjacency(edges, 4).to_dense().numpy(), d[:, None] * a * d[None], rtol=1e-6
    )


def test_secure_neighbour_aggregation_equals_the_plaintext_computation(cora):
    parts = split_nodes("louvain", cora.y, cora.edges, 4, 1.0, np.random.default_rng(0))
    ax, degree = gcn.precommunicate(cora, parts, seed=0, clip=None, noise_multiplier=0.0)
    adj = gcn.normalized_adjacency(cora.edges, cora.num_nodes)
    plain = torch.sparse.mm(adj, torch.from_numpy(cora.x)).numpy()
    assert np.abs(ax - plain).max() < 4 * 2**-12  # the fixed-point resolution, 4 clients
    np.testing.assert_array_equal(degree, 1 + np.bincount(cora.edges.ravel(), minlength=2708))


def test_two_hop_client_view_is_the_full_graph_gcn(cora):
    parts = split_nodes("louvain", cora.y, cora.edges, 5, 1.0, np.random.default_rng(0))
    ax, degree = gcn.precommunicate(cora, parts, seed=0, clip=None, noise_multiplier=0.0)
    model = gcn.GCN(1433, 8, 7, 0.0, torch.Generator().manual_seed(0)).eval()
    full = model(gcn.full_view(cora))
    client = gcn.precomm_client(gcn.graph_part(cora, parts[2]), ax, degree, hops=2)
    torch.testing.assert_close(model(client.x_test), full[parts[2]], atol=1e-3, rtol=1e-3)


def test_three_clients_learn_cora_in_the_suite():
    cfg = parse_config(
        {
            "task": "gcn",
            "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": "precomm", "hops": 2, "precomm-epsilon": 0.0},
            "train": {
                "rounds": 15,
                "local-epochs": 3,
                "lr": 0.5,
                "momentum": 0.0,
                "weight-decay": 5e-4,
            },
        }
    )
    rounds = []
    run_inprocess(cfg, rounds.append)
    assert rounds[-1]["server-eval"]["accuracy"] > 0.6  # chance is about 0.3 (the top class)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {
                "privacy": {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0},
                "evaluate": {"fraction": 0.0},
            },
            "independent",
        ),
        ({"data": {"dataset": "mnist"}}, "needs a graph dataset"),
        ({"model": {"hidden": [16, 16]}}, "one hidden layer"),
    ],
)
def test_gcn_misconfiguration_is_refused(settings, message):
    raw = {
        "task": "gcn",
        "data": {"dataset": "cora", "partition": "louvain"},
        "model": {"hidden": [16]},
    }
    for key, value in settings.items():
        raw[key] = raw.get(key, {}) | value
    with pytest.raises(ConfigError, match=message):  # the task's own rules
        checked_task(parse_config(raw))


def test_client_level_dp_runs_on_the_graph_task_and_is_recorded(tmp_path):
    from simulations.runner import simulate

    cfg = parse_config(
        {
            "task": "gcn",
            "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": "local"},
            "train": {"rounds": 2, "local-epochs": 3, "lr": 0.5, "momentum": 0.0},
            "privacy": {"dp": "client", "clip-norm": 1.0, "noise-multiplier": 1.0},
            "evaluate": {"fraction": 0.0},
        }
    )
    result = simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["privacy"]["client_level_epsilon"] > 0
    assert (tmp_path / "run" / "privacy_report.html").exists()


def test_a_precommunication_of_two_clients_is_refused_before_the_run(tmp_path):
    """FedGCN's pre-communication is a secure sum over every client: with two, each reads
    the other's from the sum. The gcn task's own rule refuses it before a run exists."""
    cfg = parse_config(
        {
            "task": "gcn",
            "data": {"dataset": "cora", "num-clients": 2, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": "precomm"},
        }
    )
    with pytest.raises(ConfigError, match="needs at least 3 clients"):
        checked_task(cfg)
    with pytest.raises(ConfigError, match="needs at least 3 clients"):
        runner.simulate(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
