"""FedAvg, FedProx and Flower's server optimizers as an algorithm on typed statistics (tasks
``mlp-fedavg``, ``gcn-fedavg``), against Flower's own strategies on the model-update path
(tasks ``mlp``, ``gcn``): the same model after the same rounds, in the clear and under secure
aggregation, FedGCN's pre-communication included; under client-level DP a server optimizer
post-processes the noised release."""

import numpy as np
import pytest

from fedcore.apps import make_client_app
from fedcore.arrays import to_numpy
from fedcore.config import ConfigError, parse_config
from fedcore.keys import ARRAYS
from fedcore.optimizers import OPTIMIZERS
from fedcore.robust import ROBUST
from fedcore.server import run_server
from fedcore.tasks import checked_task
from fedcore.tasks.fedavg import SERVER
from privacy.ledger import DpEvent, PrivacyLedger
from simulations.engines.inprocess import InProcessGrid, run_inprocess
from simulations.runner import simulate
from strategies.registry import build_strategy

BASE = {
    "data": {"num-clients": 4, "partition": "dirichlet", "alpha": 1.0},
    "model": {"hidden": [16]},
    "train": {"rounds": 3, "local-epochs": 1, "lr": 0.05},
    "evaluate": {"fraction": 0.0},
    "secagg": {"bound": 10.0},  # no update entry reaches it: nothing clipped on either path
}


def _weights(arrays) -> dict[str, np.ndarray]:
    return {k: to_numpy(arrays[k]) for k in arrays if not k.startswith(SERVER)}


def _both(overrides: dict) -> tuple[dict, dict]:
    """The final models of task mlp (Flower's strategy) and task mlp-fedavg (this algorithm)."""
    out = []
    for task in ("mlp", "mlp-fedavg"):
        cfg = parse_config(BASE | {"task": task, **overrides})
        out.append(_weights(run_inprocess(cfg, lambda record: None)))
    return out[0], out[1]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_server_optimizer_equals_flowers_strategy(name):
    """Flower averages the clients' weights in float32 and steps its optimizer on that mean;
    this path sums their float64 updates: the models agree to float32 rounding."""
    flower, ours = _both({"strategy": {"name": name, "eta": 0.01}})
    assert flower.keys() == ours.keys()
    for k in flower:
        np.testing.assert_allclose(ours[k], flower[k], atol=2e-5, rtol=0, err_msg=k)


def test_under_secure_aggregation_within_the_fixed_point_bound():
    plain, _ = _both({"strategy": {"name": "fedadam", "eta": 0.01}})
    cfg = parse_config(
        BASE
        | {
            "task": "mlp-fedavg",
            "strategy": {"name": "fedadam", "eta": 0.01},
            "secagg": {"mode": "full", "bound": 10.0, "frac-bits": 32},
        }
    )
    secure = _weights(run_inprocess(cfg, lambda record: None))
    for k in plain:
        np.testing.assert_allclose(secure[k], plain[k], atol=2e-5, rtol=0, err_msg=k)


def test_the_optimizers_buffers_never_reach_a_client():
    seen: list[set[str]] = []

    def spy(msg, context, call_next):
        arrays = msg.content.array_records.get(ARRAYS)
        if arrays is not None:
            seen.append(set(arrays.keys()))
        return call_next(msg, context)

    cfg = parse_config(BASE | {"task": "mlp-fedavg", "strategy": {"name": "fedyogi"}})
    with InProcessGrid(cfg, client_app=make_client_app(cfg, mods=[spy])) as grid:
        final = run_server(grid, cfg)
    assert any(k.startswith(SERVER) for k in final)  # the server keeps them
    assert seen and all(not any(k.startswith(SERVER) for k in keys) for keys in seen)


def test_a_server_optimizer_post_processes_a_client_level_dp_release(tmp_path):
    """Under DP-FedAvg the optimizer reads only the noised sum, so FedAdam is allowed here
    (the model-update path refuses it: its optimizer would step on the un-noised mean)."""
    dp = {"privacy": {"dp": "client", "noise-multiplier": 1.0, "clip-norm": 0.5}}
    with pytest.raises(ConfigError, match="fedadam"):
        checked_task(parse_config(BASE | {"task": "mlp", "strategy": {"name": "fedadam"}, **dp}))
    cfg = parse_config(BASE | {"task": "mlp-fedavg", "strategy": {"name": "fedadam"}, **dp})
    simulate(cfg, out=tmp_path / "run", progress=False)
    ledger = PrivacyLedger.load(tmp_path / "run" / "ledger.jsonl")
    assert [e.round for e in ledger.events] == [1, 2, 3]
    assert {(e.client, e.neighbouring, e.noise_multiplier) for e in ledger.events} == {
        (None, "client", 1.0)
    }


@pytest.mark.parametrize("name", ROBUST)
def test_every_robust_aggregator_equals_flowers_strategy(name):
    """Flower's FedMedian, FedTrimmedAvg and Krum on the clients' float32 weights; this path
    on their updates (weights minus the global model, which none of the three depends on)."""
    strategy = {"name": name, "trim-beta": 0.25, "num-malicious": 1}
    flower, ours = _both({"strategy": strategy, "data": BASE["data"] | {"num-clients": 5}})
    for k in flower:
        np.testing.assert_allclose(ours[k], flower[k], atol=2e-5, rtol=0, err_msg=k)


@pytest.mark.parametrize("name", ROBUST)
def test_a_robust_aggregator_is_refused_where_only_the_sum_is_seen(name):
    cfg = {"task": "mlp-fedavg", "strategy": {"name": name}}
    with pytest.raises(ConfigError, match="secure aggregation hides"):
        parse_config(BASE | cfg | {"secagg": {"mode": "full", "bound": 10.0}})
    dp = {"privacy": {"dp": "client", "noise-multiplier": 1.0, "clip-norm": 0.5}}
    with pytest.raises(ConfigError, match=f"{name}.*noises only their sum"):
        build_strategy(parse_config(BASE | cfg | dp))


@pytest.mark.parametrize(
    ("dp", "secagg"), [("sample", "off"), ("sample", "full"), ("sample-distributed", "full")]
)
def test_dp_sgd_on_typed_statistics_equals_the_model_update_path(dp, secagg):
    """The same DP-SGD (the batches and noise seeded: the experiments-only opt-in), the same
    example-count weights, the same events in the run's ledger; distributed DP-SGD's one step
    per round with its noise shared under secure aggregation included."""
    privacy = {"dp": dp, "clip-norm": 1.0, "noise-multiplier": 1.1, "seeded-noise": True}
    if dp == "sample-distributed":
        privacy["sample-rate"] = 0.1
    overrides = {
        "privacy": privacy,
        "secagg": {"mode": secagg, "bound": 10.0, "frac-bits": 32},
        "train": BASE["train"] | {"rounds": 2},
    }
    models, ledgers = [], []
    for task in ("mlp", "mlp-fedavg"):
        cfg = parse_config(BASE | {"task": task, **overrides})
        rounds: list[dict] = []
        models.append(_weights(run_inprocess(cfg, rounds.append)))
        events = [DpEvent.from_dict(e) for r in rounds for e in r["privacy-events"]]
        ledgers.append(sorted((e.round, e.client, e.mechanism, e.steps) for e in events))
    flower, ours = models
    for k in flower:
        np.testing.assert_allclose(ours[k], flower[k], atol=2e-5, rtol=0, err_msg=k)
    assert ledgers[0] == ledgers[1] and {m for _, _, m, _ in ledgers[1]} == {"dp-sgd"}
    assert len(ledgers[1]) == 2 * 4  # every client, every round


@pytest.mark.parametrize("clipping", ["server", "client"])
def test_adaptive_clipping_on_typed_statistics_equals_the_model_update_path(clipping):
    """The same norms round by round (the count's noise seeded), moving toward the target
    quantile from a norm that clips every update, and the same model."""
    privacy = {
        "dp": "client",
        "clipping": clipping,
        "adaptive": True,
        "clip-norm": 0.01,
        "noise-multiplier": 0.5,
        "count-stddev": 2.0,
        "seeded-noise": True,
    }
    overrides = {"privacy": privacy, "train": BASE["train"] | {"rounds": 4}}
    models, clips = [], []
    for task in ("mlp", "mlp-fedavg"):
        rounds: list[dict] = []
        cfg = parse_config(BASE | {"task": task, **overrides})
        models.append(_weights(run_inprocess(cfg, rounds.append)))
        clips.append([e["clip_norm"] for r in rounds for e in r["privacy-events"]])
    assert clips[0] == pytest.approx(clips[1], rel=1e-12)
    assert clips[1][0] == 0.01 and clips[1][-1] > 1.25 * 0.01, clips[1]
    flower, ours = models
    for k in flower:
        np.testing.assert_allclose(ours[k], flower[k], atol=2e-5, rtol=0, err_msg=k)


@pytest.mark.parametrize("mode", ["local", "precomm"])
def test_the_gcn_on_typed_statistics_equals_the_gcn_on_flowers_fedavg(mode):
    """The same GCN, Cora over 3 Louvain clients; with pre-communication the task's setup
    (the secure sum of the clients' neighbour aggregates) runs on this path too."""
    out = []
    for task in ("gcn", "gcn-fedavg"):
        cfg = parse_config(
            {
                "task": task,
                "data": {"dataset": "cora", "partition": "louvain", "num-clients": 3},
                "model": {"hidden": [16]},
                "graph": {"mode": mode},
                "train": {"rounds": 2},
                "evaluate": {"fraction": 0.0},
                "secagg": {"bound": 10.0},
            }
        )
        out.append(_weights(run_inprocess(cfg, lambda record: None)))
    flower, ours = out
    for k in flower:
        np.testing.assert_allclose(ours[k], flower[k], atol=1e-6, rtol=0, err_msg=k)


def test_an_update_uploads_no_more_bytes_than_flowers_float32_model_update():
    """The update of a float32 model goes out as float32 (``Algorithm.wire_dtype``); a
    float64 wire would double every client's upload."""
    received = {}
    for task in ("mlp", "mlp-fedavg"):
        records = []
        run_inprocess(parse_config(BASE | {"task": task}), records.append)
        received[task] = records[-1]["bytes-received"]
    assert received["mlp-fedavg"] <= 1.01 * received["mlp"]


@pytest.mark.parametrize("clipping", ["client", "server"])
def test_a_clipped_float32_update_passes_the_servers_clip_check(clipping):
    """Rounding a clipped update to float32 can lengthen it by a few ulps: the server's
    check allows float32's rounding, and no reply is rejected."""
    cfg = parse_config(
        BASE
        | {
            "task": "mlp-fedavg",
            "privacy": {
                "dp": "client",
                "noise-multiplier": 0.5,
                "clip-norm": 1e-3,  # every update is clipped
                "clipping": clipping,
            },
        }
    )
    records = []
    run_inprocess(cfg, records.append)
    assert all(r["train-failures"] == [] and r["status"] == "aggregated" for r in records)
