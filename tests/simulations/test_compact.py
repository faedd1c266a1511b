"""Compact exports of a run's model (int8, pruned): sizes, sparsity, accuracy, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcore.cli import main, scenario_path
from fedcore.config import parse_config
from fedcore.keys import ACCURACY
from simulations import compact as compact_module
from simulations.compact import (
    CompactError,
    compact,
    linear_sparsity,
    load_compact,
    pack_pruned,
    unpack_pruned,
)
from simulations.runner import simulate

MLP = {
    "data": {"num-clients": 2},
    "model": {"hidden": [32]},
    "train": {"rounds": 2},
    "evaluate": {"fraction": 0.0},
}
GCN = {
    "task": "gcn",
    "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
    "model": {"hidden": [16]},
    "graph": {"mode": "local"},
    "train": {"rounds": 2, "local-epochs": 5, "lr": 0.5, "momentum": 0.0},
    "evaluate": {"fraction": 0.0},
}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A finished two-round digits MLP run and its compact exports at 70% sparsity."""
    path = tmp_path_factory.mktemp("mlp") / "run"
    simulate(parse_config(MLP), out=path, progress=False)
    return path, compact(path, prune=0.7, repeats=3)


@pytest.fixture(scope="module")
def gcn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("gcn") / "run"
    simulate(parse_config(GCN), out=path, progress=False)
    return path, compact(path, prune=0.5, repeats=3)


@pytest.mark.parametrize("run", ["mlp_run", "gcn_run"])
def test_int8_is_smaller_and_as_accurate_as_float(run, request):
    _, result = request.getfixturevalue(run)
    v = result["variants"]
    assert v["int8"]["size_bytes"] < v["float"]["size_bytes"]
    assert abs(v["int8"]["accuracy"] - v["float"]["accuracy"]) <= 0.03
    assert v["float"]["accuracy"] > 0.4  # trained: well above chance (10 and 7 classes)


def test_the_gcn_int8_quantizes_both_weight_matrices(gcn_run):
    _, result = gcn_run
    assert result["variants"]["int8"]["quantized"] == ["lin1", "lin2"]
    assert result["test_examples"] == 1000  # Cora's standard test split


@pytest.mark.parametrize("run", ["mlp_run", "gcn_run"])
def test_the_pruned_export_has_the_requested_sparsity_and_a_smaller_file(run, request):
    path, result = request.getfixturevalue(run)
    pruned = result["variants"]["pruned"]
    model = load_compact(path, "pruned")
    assert linear_sparsity(model) == pytest.approx(result["prune"], abs=1e-3)
    assert pruned["sparsity"] == pytest.approx(result["prune"], abs=1e-3)
    assert pruned["size_bytes"] < result["variants"]["float"]["size_bytes"]
    assert abs(pruned["accuracy"] - result["variants"]["float"]["accuracy"]) <= 0.15


def test_the_exports_load_back_as_the_models_measured(mlp_run):
    path, result = mlp_run
    run = compact_module.load_run_model(path)
    for variant in ("int8", "pruned"):
        model = load_compact(path, variant)
        with torch.inference_mode():
            metrics = run.task.evaluate(model, run.data.x_test, run.data.y_test)
        assert metrics[ACCURACY] == result["variants"][variant]["accuracy"]
    assert json.loads((path / "compact" / "compact.json").read_text()) == result


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(max_dims=3, max_side=9),
        elements=st.sampled_from([0.0, 0.0, -1.5, 2.25, 3e-8]),
    )
)
def test_packing_a_pruned_tensor_round_trips_exactly(weights):
    state = {"w": torch.from_numpy(weights), "b": torch.ones(2)}
    packed = pack_pruned(state, {"w"})
    assert packed["w"]["values"].numel() == np.count_nonzero(weights)
    unpacked = unpack_pruned(packed)
    assert torch.equal(unpacked["w"], state["w"]) and torch.equal(unpacked["b"], state["b"])


def test_the_cli_prints_one_line_per_variant(mlp_run, tmp_path, capsys):
    path = shutil.copytree(mlp_run[0], tmp_path / "run")
    assert main(["compact", str(path), "--prune", "0.6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["float", "int8", "pruned"]
    assert all("KB" in line and "accuracy" in line and "ms" in line for line in lines)
    assert json.loads((path / "compact" / "compact.json").read_text())["prune"] == 0.6


def test_the_cli_refuses_a_task_without_a_model(tmp_path, capsys):
    shutil.copy(scenario_path("iris-kmeans"), tmp_path / "config.toml")
    assert main(["compact", str(tmp_path)]) == 2
    assert "task 'kmeans' has no torch model" in capsys.readouterr().err
    assert not (tmp_path / "compact").exists()


def test_the_cli_refuses_a_run_without_its_model(mlp_run, tmp_path, capsys):
    path, _ = mlp_run
    shutil.copy(path / "config.toml", tmp_path / "config.toml")
    assert main(["compact", str(tmp_path)]) == 2
    assert "has no model.pt" in capsys.readouterr().err
    assert not (tmp_path / "compact").exists()


def test_a_sparsity_outside_zero_to_one_is_refused(mlp_run):
    path, _ = mlp_run
    with pytest.raises(CompactError, match=r"prune = 1\.0: the sparsity must be"):
        compact(path, prune=1.0)


def test_a_model_file_of_another_model_is_refused(mlp_run, tmp_path, capsys):
    path, _ = mlp_run
    shutil.copy(path / "config.toml", tmp_path / "config.toml")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "model.pt")
    assert main(["compact", str(tmp_path)]) == 2
    assert "is not a state dict of task 'mlp'" in capsys.readouterr().err
