"""The server holds only what it needs: the model's shape and, when it evaluates, the
held-out test set; never a client's data (issue 15's "the server needs only what it needs").

Each test plays a deployment in which the server's machine lacks what it must not need."""

import dataclasses
import shutil

import numpy as np
import pytest

import fedcore.server
from fedcore.apps import make_client_app
from fedcore.config import parse_config
from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES
from fedcore.datasets.node import write_node_files
from fedcore.keys import DATA_PATH, PARTITION_ID
from fedcore.server import run_server
from fedcore.tasks import ServerData, get_algorithm, get_task, model_shape, server_data
from simulations.engines.inprocess import InProcessGrid

SHARED = resolve_data_dir()
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist" / TEST_IMAGES).is_file(),
    reason=f"MNIST IDX files not found under {SHARED / 'mnist'} (set FEDCORE_DATA)",
)


@pytest.fixture
def test_split_only(tmp_path):
    """A data folder holding MNIST's two test files and not its training files."""
    (tmp_path / "server" / "mnist").mkdir(parents=True)
    for name in (TEST_IMAGES, TEST_LABELS):
        shutil.copy(SHARED / "mnist" / name, tmp_path / "server" / "mnist" / name)
    return tmp_path / "server"


def _node_files(folder, num_clients):
    rng = np.random.default_rng(0)
    arrays = [
        (
            rng.random((30, 784), np.float32),
            rng.integers(0, 10, 30),
            rng.random((10, 784), np.float32),
            rng.integers(0, 10, 10),
        )
        for _ in range(num_clients)
    ]
    return write_node_files(arrays, folder)


@needs_mnist
def test_a_server_with_only_the_test_split_runs_while_nodes_train_on_their_own_files(
    test_split_only, tmp_path
):
    """The clients hold their data as node files; the server's data folder has no MNIST
    training file. The previous server loaded and partitioned the whole dataset, so this
    run failed there with a missing-file DatasetError."""
    cfg = parse_config(
        {
            "data": {"dataset": "mnist", "data-dir": str(test_split_only), "num-clients": 3},
            "model": {"hidden": [8]},
            "train": {"rounds": 1, "local-epochs": 1},
            "evaluate": {"fraction": 0.0},
        }
    )
    paths = _node_files(tmp_path / "nodes", 3)

    def own_file(msg, context, call_next):  # what a SuperNode's --node-config gives it
        context.node_config[DATA_PATH] = str(paths[int(context.node_config[PARTITION_ID])])
        return call_next(msg, context)

    rounds = []
    with InProcessGrid(cfg, client_app=make_client_app(cfg, mods=[own_file])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    assert rounds[0]["status"] == "aggregated" and rounds[0]["aggregated-clients"] == 3
    assert 0.0 <= rounds[0]["server-eval"]["accuracy"] <= 1.0
    with pytest.raises(DatasetError, match=TRAIN_IMAGES):  # what the old server needed
        get_task("mlp").load_data(cfg)


@needs_mnist
def test_the_server_data_is_the_test_split_or_the_shape_alone(test_split_only, tmp_path):
    cfg = parse_config({"data": {"dataset": "mnist", "data-dir": str(test_split_only)}})
    data = server_data(get_task("mlp"), cfg)
    assert (data.num_features, data.num_classes) == (784, 10)
    assert data.x_test.shape == (10000, 784) and data.y_test.shape == (10000,)
    # without server evaluation, nothing is read: the folder may be empty
    (tmp_path / "empty").mkdir()
    off = parse_config(
        {
            "data": {"dataset": "mnist", "data-dir": str(tmp_path / "empty")},
            "evaluate": {"server": False},
        }
    )
    assert server_data(get_task("mlp"), off) == ServerData(784, 10)
    assert model_shape(get_task("mlp"), cfg) == ServerData(784, 10)


def _refusing_load_data(cfg):
    raise AssertionError("the server loaded the clients' data")


@pytest.mark.parametrize(
    "settings",
    [
        {"task": "mlp"},
        {"task": "fedsgd"},
        {"task": "gcn", "data": {"dataset": "cora", "partition": "louvain", "num-clients": 3}},
        {
            "task": "gcn",
            "data": {"dataset": "cora", "partition": "louvain", "num-clients": 3},
            "graph": {"mode": "precomm"},
            "secagg": {"mode": "full"},
        },
        {
            "task": "mf",
            "data": {"dataset": "ml-100k", "partition": "iid", "num-clients": 4},
            "evaluate": {"server": False},
        },
    ],
    ids=["mlp", "fedsgd", "gcn", "gcn-precomm", "mf"],
)
def test_no_builtin_task_loads_the_clients_data_on_the_server(settings, monkeypatch):
    """The server's task refuses ``load_data``; its clients (in this process) keep theirs."""
    cfg = parse_config(
        {
            "data": {"num-clients": 4},
            "model": {"hidden": [8]},
            "train": {"rounds": 1, "local-epochs": 1},
            **settings,
        }
    )
    task = dataclasses.replace(get_algorithm(cfg.task), load_data=_refusing_load_data)
    monkeypatch.setattr(fedcore.server, "checked_task", lambda cfg: task)
    rounds = []
    with InProcessGrid(cfg) as grid:
        final = run_server(grid, cfg, on_round=rounds.append)
    assert rounds[0]["status"] == "aggregated", rounds[0]
    assert all(np.isfinite(a.numpy()).all() for a in final.values())
