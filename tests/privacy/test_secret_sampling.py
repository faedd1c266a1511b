"""Amplification by sampling assumes nobody can tell who (or which example) was sampled.

The run seed is public: it is written to ``config.toml`` and sent to every node. These tests
play an observer who knows it and recomputes the cohorts and the DP-SGD batches the way fedcore
derives its seeded streams; under DP they must not match what ran.
"""

import dataclasses

import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict

import clients.handlers as handlers
from fedcore import seeding
from fedcore.arrays import to_record
from fedcore.config import parse_config
from fedcore.tasks import get_task
from fedcore.tasks.fedavg import fedavg
from simulations.engines.inprocess import InProcessGrid, make_contexts, node_ids
from strategies import build_strategy

DP_CLIENT = {
    "data": {"num-clients": 10},
    "train": {"fraction": 0.3},
    "evaluate": {"fraction": 0.0},
    "privacy": {"dp": "client", "clip-norm": 1.0, "noise-multiplier": 1.0},
}


def _recomputed_cohort(nodes, seed, server_round, size):
    """The observer's recomputation of a seeded cohort (fedcore's SAMPLING stream)."""
    rng = seeding.numpy_rng(seed, seeding.SAMPLING, server_round, 0)
    return sorted(nodes[i] for i in rng.choice(len(nodes), size=size, replace=False))


def _cohorts(cfg, rounds=8):
    strategy = build_strategy(cfg)
    cohort = strategy.cohort
    with InProcessGrid(cfg) as grid:
        nodes = sorted(grid.get_node_ids())
        drawn = [cohort.sample(grid, 0.3, 1, r, 0) for r in range(1, rounds + 1)]
    return nodes, drawn


def test_a_dp_cohort_cannot_be_recomputed_from_the_seed():
    cfg = parse_config(DP_CLIENT)
    nodes, drawn = _cohorts(cfg)
    recomputed = [_recomputed_cohort(nodes, cfg.seed, r, 3) for r in range(1, 9)]
    # 120 cohorts of 3 among 10: an unchanged seeded draw would match all 8 rounds
    assert sum(a == b for a, b in zip(drawn, recomputed, strict=True)) < 4


def test_two_dp_runs_with_one_seed_draw_different_cohorts():
    cfg = parse_config(DP_CLIENT)
    assert _cohorts(cfg)[1] != _cohorts(cfg)[1]


def test_seeded_randomness_is_an_explicit_opt_in_and_reproducible():
    cfg = parse_config({**DP_CLIENT, "privacy": {**DP_CLIENT["privacy"], "seeded-noise": True}})
    nodes, drawn = _cohorts(cfg)
    assert drawn == [_recomputed_cohort(nodes, cfg.seed, r, 3) for r in range(1, 9)]


def test_without_dp_cohorts_stay_reproducible_from_the_seed():
    cfg = parse_config({"data": {"num-clients": 10}, "train": {"fraction": 0.3}})
    nodes, drawn = _cohorts(cfg)
    assert drawn == [_recomputed_cohort(nodes, cfg.seed, r, 3) for r in range(1, 9)]


@pytest.mark.parametrize("seeded", [False, True])
def test_dp_sgd_batches_cannot_be_recomputed_from_the_seed(monkeypatch, seeded):
    cfg = parse_config(
        {
            "data": {"num-clients": 2},
            "model": {"hidden": [8]},
            "train": {"local-epochs": 1},
            "evaluate": {"fraction": 0.0},
            "privacy": {
                "dp": "sample",
                "clip-norm": 1.0,
                "noise-multiplier": 1.0,
                "seeded-noise": seeded,
            },
        }
    )
    task = get_task(cfg.task)
    seen = []

    def spy(model, data, params, dp, rng, noise_rng):
        seen.append(torch.rand(64, generator=rng))  # what picks the Poisson batches
        return task.train_one_client(model, data, params, torch.Generator().manual_seed(0))

    with_spy = fedavg(dataclasses.replace(task, train_one_client_dp=spy))
    monkeypatch.setattr(handlers, "get_algorithm", lambda name: with_spy)

    model = task.build_model(cfg, task.load_data(cfg), torch.Generator().manual_seed(0))
    contexts = make_contexts(cfg, node_ids(2))
    node, context = next(iter(contexts.items()))
    pid = context.node_config["partition-id"]
    content = RecordDict(
        {"arrays": to_record(model.state_dict()), "config": ConfigRecord({"server-round": 1})}
    )
    handlers.handle_train(Message(content, dst_node_id=node, message_type="train"), context, cfg)
    # the observer's guesses: the client's seeded training stream, or (opt-in) the seeded
    # batch stream
    guess = (
        seeding.batch_generator(True, cfg.seed, 1, pid)
        if seeded
        else seeding.client_generator(cfg.seed, 1, pid)
    )
    assert torch.equal(seen[0], torch.rand(64, generator=guess)) == seeded


def test_the_report_of_a_seeded_run_refuses_to_state_a_guarantee(tmp_path):
    from simulations import runner

    settings = {**DP_CLIENT["privacy"], "seeded-noise": True}
    cfg = parse_config({**DP_CLIENT, "train": {"rounds": 1}, "privacy": settings})
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["privacy"]["seeded"] is True
    text = (tmp_path / "run" / "privacy_report.md").read_text()
    assert text.splitlines()[2].startswith("**No guarantee")
    assert "NO GUARANTEE" in (tmp_path / "run" / "privacy_report.html").read_text().upper()
