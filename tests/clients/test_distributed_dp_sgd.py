"""Distributed DP-SGD: each round is one step of central DP-SGD, its noise shared by the
clients under secure aggregation."""

import json

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from clients.dp_training import train_one_client_dp
from clients.privacy import dp_sgd_params
from fedcore import seeding
from fedcore.config import ConfigError, parse_config
from fedcore.tasks import TrainParams, get_task
from privacy.ledger import PrivacyLedger
from simulations import runner
from simulations.engines.inprocess import run_inprocess

SETTINGS = {
    "data": {"num-clients": 4},
    "model": {"hidden": [16]},
    "train": {"rounds": 2, "local-epochs": 1, "lr": 0.5, "momentum": 0.0},
    "secagg": {"mode": "full", "bound": 8.0},
    "evaluate": {"fraction": 0.0},
    "privacy": {
        "dp": "sample-distributed",
        "clip-norm": 1.0,
        "noise-multiplier": 1.2,
        "sample-rate": 0.1,
        "seeded-noise": True,
    },
}


def _settings(**tables):
    return {k: SETTINGS.get(k, {}) | tables.get(k, {}) for k in SETTINGS.keys() | tables.keys()}


def _run(settings):
    rounds = []
    arrays = run_inprocess(parse_config(settings), rounds.append)
    return {k: v.numpy() for k, v in arrays.items()}, rounds


def test_a_round_is_one_dp_sgd_step_over_every_clients_examples():
    """The unmasked aggregate equals the clients' DP-SGD steps, computed here one by one,
    averaged by their example counts: w0 - lr * sum_i (clipped sum_i + noise_i) / (q N)."""
    one_round = _settings(train={"rounds": 1})
    initial, _ = _run(one_round | {"faults": {"client-failure-rate": 1.0}})
    after, rounds = _run(one_round)
    assert rounds[0]["train-failures"] == [] and rounds[0]["train"]["secure-sum"] == 4

    cfg = parse_config(one_round)
    task = get_task("mlp")
    data = task.load_data(cfg)
    params = TrainParams(epochs=1, batch_size=cfg.train.batch_size, lr=0.5)
    total, weights = {k: np.zeros_like(v) for k, v in initial.items()}, 0
    for pid, client in enumerate(data.clients):
        model = task.build_model(cfg, data, torch.Generator())
        model.load_state_dict({k: torch.from_numpy(v) for k, v in initial.items()})
        update = train_one_client_dp(
            model,
            client,
            params,
            dp_sgd_params(cfg, client.num_train),
            seeding.batch_generator(True, cfg.seed, 1, pid),
            seeding.noise_generator(True, cfg.seed, 1, pid),
        )
        for k, v in update.state.items():
            total[k] += client.num_train * (v.numpy() - initial[k])
        weights += client.num_train
    # fixed point: each client's weighted input (weight n_i / 10^4) is rounded to 2^-20
    resolution = 4 * 2.0**-20 / (weights / 1e4)
    for k in initial:
        np.testing.assert_allclose(after[k], initial[k] + total[k] / weights, atol=resolution)


def test_each_client_adds_its_share_of_the_step_noise():
    """With an empty batch a client's step is its noise alone: std z * C / sqrt(k)."""
    cfg = parse_config(_settings(privacy={"sample-rate": 1e-9}))
    dp = dp_sgd_params(cfg, 1000)
    assert dp.steps(5) == 1 and dp.noise_share == pytest.approx(0.5)  # 4 clients share it
    client = get_task("mlp").load_data(cfg).clients[0]
    model = torch.nn.Linear(client.x_train.shape[1], 100)  # 6,400 weights
    before = model.weight.detach().clone()
    params = TrainParams(epochs=1, batch_size=1, lr=1.0)
    train_one_client_dp(model, client, params, dp, torch.Generator().manual_seed(0))
    noise = (before - model.weight.detach()) * dp.sample_rate * client.num_train
    assert noise.std().item() == pytest.approx(1.2 * 1.0 / 2, rel=0.03)


def test_every_client_records_one_step_per_round_at_the_sums_noise(tmp_path):
    runner.simulate(parse_config(_settings()), out=tmp_path / "run", progress=False)
    ledger = PrivacyLedger.load(tmp_path / "run" / "ledger.jsonl")
    assert ledger.clients() == [0, 1, 2, 3]
    for c in ledger.clients():
        events = ledger.for_client(c).events
        assert [(e.round, e.steps, e.noise_multiplier, e.sample_rate) for e in events] == [
            (1, 1, 1.2, 0.1),
            (2, 1, 1.2, 0.1),
        ]
    accountant = RDPAccountant()
    for _ in range(2):
        accountant.step(noise_multiplier=1.2, sample_rate=0.1)
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    assert report["clients"]["0"]["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5))
    assert "Distributed DP-SGD" in (tmp_path / "run" / "privacy_report.md").read_text()


def test_calibration_plans_one_step_per_round():
    cfg = parse_config(
        _settings(
            train={"rounds": 50},
            privacy={"noise-multiplier": 0.0, "target-epsilon": 2.0, "seeded-noise": False},
        )
    )
    dp = dp_sgd_params(cfg, 300)
    accountant = RDPAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=0.1)
    assert accountant.get_epsilon(1e-5) == pytest.approx(2.0, rel=0.01)


def test_a_sum_with_less_noise_than_accounted_is_not_released():
    # 8 clients: with 4, any dropout would first fall below secure aggregation's own floor
    faults = {"client-failure-rate": 0.25, "crash-stage": "masked-input"}
    data = {"num-clients": 8}
    initial, _ = _run(
        _settings(train={"rounds": 1}, data=data, faults={"client-failure-rate": 1.0})
    )
    after, rounds = _run(_settings(train={"rounds": 1}, data=data, faults=faults))
    reasons = rounds[0]["train-failures"]
    assert reasons and all("shares of the DP noise cover a sum of at least 8" in r for r in reasons)
    for k in initial:
        np.testing.assert_array_equal(after[k], initial[k])


def test_dropouts_within_the_tolerance_are_covered():
    # at most 2 of 8: secure aggregation's floor unmasks a client only with t + 1 = 6 holders
    faults = {"client-failure-rate": 0.15, "crash-stage": "masked-input"}
    settings = _settings(data={"num-clients": 8}, faults=faults, privacy={"dropout-tolerance": 0.5})
    _, rounds = _run(settings)
    for r in rounds:
        assert r["train"]["secure-sum"] >= 4
    cfg = parse_config(settings)
    assert dp_sgd_params(cfg, 100).noise_share == pytest.approx(0.5)  # sized for 4 of 8


def test_dp_replies_carry_no_unnoised_statistics():
    _, rounds = _run(_settings())
    assert "train-loss" not in rounds[-1]["train"]
    _, rounds = _run(
        {
            "data": {"num-clients": 3},
            "evaluate": {"fraction": 0.0},
            "privacy": {**SETTINGS["privacy"], "dp": "sample"},
        }
    )
    assert "train-loss" not in rounds[-1]["train"] and "epsilon" in rounds[-1]["train"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secagg": {"mode": "off"}}, "secagg.mode"),
        ({"privacy": {"sample-rate": 0.0}}, "privacy.sample-rate"),
        ({"train": {"local-epochs": 2}}, "train.local-epochs = 1"),
        ({"train": {"fraction": 0.5}, "data": {"num-clients": 8}}, "train.fraction = 1"),
    ],
)
def test_settings_that_would_not_be_central_dp_sgd_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_settings(**change))


def test_dropout_tolerance_needs_distributed_dp_sgd():
    with pytest.raises(ConfigError, match="dropout-tolerance"):
        parse_config({"privacy": {"dropout-tolerance": 0.2}})
