"""engine.device on a machine without a GPU (CI's): the CPU path is the same model as
before, ``auto`` falls back to it, and ``cuda`` is refused in one line, before the run."""

import numpy as np
import pytest
import torch

from fedcore.cli import main
from fedcore.config import ConfigError, parse_config
from fedcore.devices import DeviceError, on_device, torch_device
from fedcore.tasks.base import ClientData
from simulations.engines.inprocess import run_inprocess

SMALL = {"data": {"num-clients": 3}, "train": {"rounds": 1}, "model": {"hidden": [16]}}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_without_a_gpu_trains_on_the_cpu_to_the_same_model(no_cuda):
    assert torch_device("auto") == torch.device("cpu")
    cpu = run_inprocess(parse_config(SMALL), lambda r: None)
    auto = run_inprocess(parse_config(SMALL | {"engine": {"device": "auto"}}), lambda r: None)
    for k in cpu:
        np.testing.assert_array_equal(cpu[k].numpy(), auto[k].numpy())


def test_cuda_without_a_gpu_is_refused_before_the_run(no_cuda, tmp_path, capsys):
    with pytest.raises(DeviceError, match="sees no CUDA device"):
        torch_device("cuda")
    code = main(["simulate", "--set", "engine.device=cuda", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "sees no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_cpu_keeps_the_clients_data_as_it_is():
    data = ClientData(*(torch.zeros(2) for _ in range(4)))
    assert on_device(data, torch.device("cpu")) is data


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"task": "gcn", "data": {"dataset": "cora"}}, "is for task 'mlp'"),
        ({"privacy": {"dp": "sample", "clip-norm": 1.0, "noise-multiplier": 1.0}}, "DP-SGD"),
        ({"engine": {"name": "ray", "device": "cuda"}}, "needs engine.gpus > 0"),
    ],
)
def test_a_device_is_refused_where_its_path_is_not_known_to_hold(settings, match):
    engine = {"device": "cuda"} | settings.get("engine", {})
    with pytest.raises(ConfigError, match=match):
        parse_config(settings | {"engine": engine})
