"""FedSGD is gradient descent on the pooled data: the scenario against a centralized loop."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedcore import seeding
from fedcore.arrays import to_numpy
from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from fedcore.tasks import get_task
from simulations.engines.inprocess import run_inprocess

STEPS = 20


def _centralized(cfg) -> dict[str, np.ndarray]:
    """STEPS full-batch gradient steps on every client's data pooled, from the same start."""
    task = get_task(cfg.task)
    data = task.load_data(cfg)
    model = task.build_model(cfg, data, seeding.torch_generator(cfg.seed, seeding.MODEL_INIT))
    x = torch.cat([c.x_train for c in data.clients])
    y = torch.cat([c.y_train for c in data.clients])
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr)
    for _ in range(STEPS):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("overrides", "tolerance"),
    [
        ({}, 1e-6),
        # fixed point: each round's sum is off by at most clients x 2^-32 x max-weight / total
        # weight per coordinate (about 1e-8 here), so 20 steps stay within 1e-6
        ({"secagg.mode": "full", "secagg.frac-bits": 32, "data.num-clients": 5}, 1e-6),
    ],
)
def test_fedsgd_equals_centralized_gradient_descent(overrides, tolerance):
    cfg = load_scenario(scenario_path("digits-fedsgd"), {"train.rounds": STEPS} | overrides)
    federated = run_inprocess(cfg, lambda record: None)
    expected = _centralized(cfg)
    for name, value in expected.items():
        np.testing.assert_allclose(to_numpy(federated[name]), value, atol=tolerance, rtol=0)
