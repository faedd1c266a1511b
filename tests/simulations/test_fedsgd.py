"""FedSGD is gradient descent on the pooled data: the scenario against a centralized loop, as
an algorithm on typed statistics (task fedsgd) and as one-step FedAvg (task mlp)."""

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
    task = get_task("mlp")  # fedsgd is the mlp task's model and data
    data = task.load_data(cfg)
    model = task.build_model(cfg, data, seeding.torch_generator(cfg.seed, seeding.MODEL_INIT))
    x = torch.cat([c.x_train for c in data.clients])
    y = torch.cat([c.y_train for c in data.clients])
    t = cfg.train
    optimizer = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
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
        # the server's optimizer: momentum and weight decay as torch.optim.SGD's
        ({"train.momentum": 0.9, "train.weight-decay": 1e-3}, 1e-6),
        # the older path: FedAvg of one full-batch local step
        ({"task": "mlp"}, 1e-6),
        (
            {"task": "mlp", "secagg.mode": "full", "secagg.frac-bits": 32, "data.num-clients": 5},
            1e-6,
        ),
    ],
)
def test_fedsgd_equals_centralized_gradient_descent(overrides, tolerance):
    cfg = load_scenario(scenario_path("digits-fedsgd"), {"train.rounds": STEPS} | overrides)
    federated = run_inprocess(cfg, lambda record: None)
    expected = _centralized(cfg)
    for name, value in expected.items():
        np.testing.assert_allclose(to_numpy(federated[name]), value, atol=tolerance, rtol=0)


def test_dp_fedsgd_is_accounted_and_clipped(tmp_path):
    """Client-level DP: every gradient clipped to the clip norm on the client (the server
    rejects a longer one), the server's noise recorded once per round."""
    from privacy.ledger import PrivacyLedger
    from simulations.runner import simulate

    overrides = {
        "train.rounds": 5,
        "privacy.dp": "client",
        "privacy.clipping": "client",
        "privacy.clip-norm": 0.05,
        "privacy.target-epsilon": 4.0,
    }
    cfg = load_scenario(scenario_path("digits-fedsgd"), overrides)
    result = simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["status"] == "completed"
    assert result.summary["privacy"]["client_level_epsilon"] <= 4.0
    events = PrivacyLedger.load(tmp_path / "run" / "ledger.jsonl").events
    assert [e.round for e in events] == [1, 2, 3, 4, 5]
    # every round stepped: the noised sum is divided by the cohort, not by a count that the
    # clip scaled to ~0.05 x 10 and rounding took to 0 (every round was skipped before)
    import json

    rounds = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["status"] for r in rounds] == ["aggregated"] * 5
    assert all("skipped" not in r["train"] for r in rounds)
    accuracies = {r["server-eval"]["accuracy"] for r in rounds}
    assert len(accuracies) > 1  # the model moved


def test_minibatch_gradients_come_from_the_clients_own_generators():
    overrides = {"train.rounds": 3, "train.batch-size": 16}
    cfg = load_scenario(scenario_path("digits-fedsgd"), overrides)
    first, again = (run_inprocess(cfg, lambda record: None) for _ in range(2))
    full = run_inprocess(
        load_scenario(scenario_path("digits-fedsgd"), {"train.rounds": 3}), lambda r: None
    )
    for name in first:
        np.testing.assert_array_equal(to_numpy(first[name]), to_numpy(again[name]))
    assert any(not np.allclose(to_numpy(first[name]), to_numpy(full[name])) for name in first)
