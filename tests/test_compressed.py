"""Compressed wire vectors and models (``[compression]``), from the pure packing to runs.

The adversary here is a client: a compressed reply the server decodes is a client's word,
so anything malformed is refused with the reason, and the round goes on without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.statistics import handle_statistics
from fedcore.arrays import to_numpy, to_record
from fedcore.compressed import EXACT, pack, pack_model, real_entries, unpack, unpack_model
from fedcore.compression import CompressionError
from fedcore.config import CompressionConfig, ConfigError, parse_config, to_run_config
from fedcore.keys import (
    ARRAYS,
    COMPRESSED,
    CONFIG,
    NUM_PARTITIONS,
    PARTITION_ID,
    RESIDUAL,
    SERVER_ROUND,
)
from fedcore.statistics import INTEGER, ArraySpec, Spec
from fedcore.tasks import checked_task, get_algorithm, model_shape
from simulations.engines.inprocess import run_inprocess
from simulations.runner import simulate

SPEC = Spec.of({"w": ArraySpec((3, 4)), "b": ArraySpec((4,)), "n": ArraySpec((), INTEGER, 1e4)})
BASE = {
    "seed": 1,
    "data": {"dataset": "digits", "num-clients": 5},
    "model": {"hidden": [16]},
    "train": {"rounds": 4, "local-epochs": 1},
    "evaluate": {"fraction": 0.0},
}
UPLINKS = {
    "qsgd-8": {"uplink": "qsgd", "bits": 8},
    "qsgd-2-blocks": {"uplink": "qsgd", "bits": 2, "block": 64},
    "topk": {"uplink": "topk", "fraction": 0.1},
    "randk": {"uplink": "randk", "fraction": 0.25},
    "sign": {"uplink": "sign"},
}


def _wire(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.normal(size=16), [37.0]])


@pytest.mark.parametrize("name", sorted(UPLINKS))
def test_counts_travel_exact_and_the_rest_decodes_to_the_compressors_output(name):
    c = CompressionConfig(**{k.replace("-", "_"): v for k, v in UPLINKS[name].items()})
    wire = _wire(np.random.default_rng(0))
    arrays, residual = pack(wire, SPEC, c, np.random.default_rng(1), None)
    decoded = unpack(arrays, SPEC)
    assert decoded[-1] == 37.0 and arrays[EXACT].tolist() == [37.0]
    real = real_entries(SPEC)
    # error feedback: what was sent plus what is kept is what there was
    np.testing.assert_allclose(decoded[real] + residual, wire[real], atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(sorted(UPLINKS)))
def test_error_feedback_loses_nothing_over_rounds(seed, name):
    """Over T rounds, the decoded updates plus the last residual sum to the true updates."""
    c = CompressionConfig(**{k.replace("-", "_"): v for k, v in UPLINKS[name].items()})
    rng, residual = np.random.default_rng(seed), None
    sent, true = np.zeros(17), np.zeros(17)
    for _ in range(5):
        wire = _wire(rng)
        arrays, residual = pack(wire, SPEC, c, rng, residual)
        sent, true = sent + unpack(arrays, SPEC), true + wire
    real = real_entries(SPEC)
    np.testing.assert_allclose(sent[real] + residual, true[real], atol=1e-9)
    np.testing.assert_array_equal(sent[~real], true[~real])


def test_a_malformed_compressed_reply_is_refused_with_the_reason():
    arrays, _ = pack(
        _wire(np.random.default_rng(0)),
        SPEC,
        CompressionConfig(uplink="topk"),
        np.random.default_rng(0),
        None,
    )
    bad_exact = {**arrays, EXACT: np.array([1.0, 2.0])}
    with pytest.raises(CompressionError, match="counts"):
        unpack(bad_exact, SPEC)
    with pytest.raises(CompressionError):
        unpack({EXACT: arrays[EXACT]}, SPEC)
    other = Spec.of({"w": ArraySpec((5,)), "n": ArraySpec((), INTEGER, 1e4)})
    with pytest.raises(CompressionError, match="16 entries, expected 5"):
        unpack(arrays, other)


def test_the_model_round_trips_its_shapes_and_stays_unbiased():
    rng = np.random.default_rng(0)
    state = {"w": rng.normal(size=(8, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    draws = [unpack_model(pack_model(state, 4, 0, np.random.default_rng(s))) for s in range(400)]
    assert all(d["w"].shape == (8, 3) and d["w"].dtype == np.float32 for d in draws)
    assert all(np.array_equal(d["b"], state["b"]) for d in draws)  # zeros are on the grid
    mean = np.mean([d["w"] for d in draws], axis=0)
    step = np.abs(state["w"]).max() / 7  # 4 bits: levels -7..7 of the largest entry
    assert np.abs(mean - state["w"]).max() < 4 * step / np.sqrt(400)
    with pytest.raises(CompressionError, match="names no model array"):
        unpack_model({"nameless": np.zeros(1)})


def _cfg(**compression):
    return parse_config(BASE | {"compression": compression})


# (serialized messages: the model is large enough here that the arrays, not Flower's
# metadata and the .npy headers, are most of a message; plain float32: 194 KB per round)
WIDE = {"model": {"hidden": [128]}}


@pytest.mark.parametrize(
    ("name", "fewer", "accuracy"),
    [("qsgd-8", 3.5, 0.85), ("topk", 5.0, 0.85), ("sign", 15.0, 0.4)],
)
def test_a_compressed_run_learns_and_uploads_fewer_bytes(name, fewer, accuracy):
    plain: list[dict] = []
    run_inprocess(parse_config(BASE | WIDE), plain.append)
    squeezed: list[dict] = []
    run_inprocess(parse_config(BASE | WIDE | {"compression": UPLINKS[name]}), squeezed.append)
    ratio = plain[-1]["bytes-received"] / squeezed[-1]["bytes-received"]
    assert ratio > fewer, ratio
    assert plain[-1]["bytes-sent"] == squeezed[-1]["bytes-sent"]  # the downlink unchanged
    assert squeezed[-1]["server-eval"]["accuracy"] > accuracy  # (4 rounds; chance: 0.1)


def test_a_quantized_downlink_sends_fewer_bytes_and_the_clients_train_from_it():
    plain: list[dict] = []
    run_inprocess(parse_config(BASE | WIDE), plain.append)
    squeezed: list[dict] = []
    compression = {"downlink": "qsgd", "downlink-bits": 4}
    run_inprocess(parse_config(BASE | WIDE | {"compression": compression}), squeezed.append)
    assert plain[-1]["bytes-sent"] / squeezed[-1]["bytes-sent"] > 4
    assert plain[-1]["bytes-received"] == squeezed[-1]["bytes-received"]
    assert squeezed[-1]["server-eval"]["accuracy"] > 0.85


def test_the_residual_is_kept_in_the_nodes_state():
    """Error feedback's residual lives in the node's Context.state (so a deployed node, and
    a checkpoint of in-process nodes, keep it), and moves with every round."""
    cfg = _cfg(**UPLINKS["topk"])
    algo = get_algorithm(cfg.task)
    init = algo.init(cfg, model_shape(algo, cfg), np.random.default_rng(0))  # FedAvg: no buffers
    context = Context(
        run_id=1,
        node_id=1,
        node_config={PARTITION_ID: 0, NUM_PARTITIONS: 5},
        state=RecordDict(),
        run_config=to_run_config(cfg),
    )
    residuals = []
    for r in (1, 2):
        content = RecordDict({ARRAYS: to_record(init), CONFIG: ConfigRecord({SERVER_ROUND: r})})
        reply = handle_statistics(Message(content, 1, "train"), context, cfg, algo)
        assert set(reply.content.array_records) == {COMPRESSED}
        residuals.append(to_numpy(context.state.array_records[RESIDUAL]["residual"]).copy())
    assert residuals[0].any() and not np.array_equal(residuals[0], residuals[1])


def test_compression_that_would_not_compose_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="one support"):
        parse_config(BASE | {"compression": {"uplink": "topk"}, "secagg": {"mode": "full"}})
    with pytest.raises(ConfigError, match="applies only with"):
        parse_config(BASE | {"compression": {"bits": 4}})
    kmeans = parse_config({"task": "kmeans", "compression": {"uplink": "qsgd"}})
    with pytest.raises(ConfigError, match="bounded statistics"):
        checked_task(kmeans)


def test_dp_with_compression_is_stated_in_the_report(tmp_path):
    cfg = parse_config(
        BASE
        | {
            "compression": {"uplink": "topk", "fraction": 0.2},
            "privacy": {
                "dp": "client",
                "clipping": "client",
                "clip-norm": 1.0,
                "noise-multiplier": 0.5,
            },
        }
    )
    result = simulate(cfg, out=tmp_path / "run", progress=False)
    assert result.summary["status"] == "completed"
    rounds = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train-failures"] == [] for r in rounds)  # decoded norms clipped, not refused
    report = json.loads((tmp_path / "run" / "privacy_report.json").read_text())
    assert "post-processing" in report["assumptions"]["compression"]


def _strategy(overrides: dict):
    from strategies.statistics import StatisticsStrategy

    cfg = parse_config(BASE | overrides)
    algo = checked_task(cfg)
    strategy = StatisticsStrategy(algo, cfg)
    strategy._state = algo.init(cfg, model_shape(algo, cfg), np.random.default_rng(0))
    strategy._spec = algo.spec(cfg, strategy._state)
    return strategy, cfg


def test_a_compressed_reply_moves_the_model_no_more_than_an_honest_local_dp_one():
    """Local DP: an uncompressed reply past what the noise reaches is refused; a compressed
    one cannot be (compression moves the norm), so its decoded vector is clipped to that
    limit: a client sending 3e38 everywhere left the model infinite before."""
    from flwr.app import ArrayRecord, MetricRecord

    from fedcore.arrays import from_numpy, to_numpy_dict
    from fedcore.compression import to_arrays, topk
    from fedcore.keys import METRICS, NUM_EXAMPLES
    from simulations.engines.inprocess import InProcessGrid
    from strategies.statistics import noise_norm_limit

    local = {"dp": "local", "clip-norm": 1.0, "noise-multiplier": 1.0}
    strategy, cfg = _strategy(
        {"privacy": local, "compression": {"uplink": "topk", "fraction": 0.1}}
    )
    with InProcessGrid(cfg) as grid:
        (out, *_) = strategy.configure_train(1, to_record(strategy._state), ConfigRecord(), grid)
    real = real_entries(strategy._spec)
    evil = np.where(real, 3e38, 1.0)
    arrays = to_arrays(topk(evil[real], 1.0)) | {EXACT: evil[~real]}
    record = ArrayRecord({k: from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    reply = Message(
        RecordDict({COMPRESSED: record, METRICS: MetricRecord({NUM_EXAMPLES: 1})}), reply_to=out
    )
    before = {k: np.asarray(v, np.float64) for k, v in strategy._state.items()}
    new, _ = strategy.aggregate_train(1, [reply])
    after = to_numpy_dict(new)
    moved = np.concatenate([(after[k] - before[k]).ravel() for k in before])
    limit = noise_norm_limit(strategy._spec.size, 1.0, 1.0)
    assert np.isfinite(moved).all() and np.linalg.norm(moved) <= limit * 1.001


def test_an_attack_is_refused_with_a_compressed_downlink_too():
    attack = {"attack": {"name": "sign-flip", "num-malicious": 1}}
    with pytest.raises(ConfigError, match="simulated attack"):
        parse_config(BASE | attack | {"compression": {"downlink": "qsgd"}})


# -- qsgd under secure aggregation: the masked integers are the quantized values ----------

SECURE_LOCAL = {
    "secagg": {"mode": "full"},
    "privacy": {"dp": "local", "clip-norm": 1.0, "noise-multiplier": 0.05},
}


def test_the_secure_sum_of_quantized_updates_is_their_plain_sum_exactly():
    """8-bit encoding in a 16-bit modulus: unmasked, the sum is the sum of the same
    quantized values, bit for bit (the masks cancel mod 2^16)."""
    from privacy.secagg.protocol import SecAggClient, SecAggServer
    from privacy.secagg.quantize import encode, fixed_point, quantized_frac_bits

    n, bound = 6, 1.5
    fp = fixed_point(n, bound, quantized_frac_bits(bound, 8), smallest=16)
    assert fp.bits == 16 and bound * fp.scale <= 127
    rng = np.random.default_rng(0)
    xs = rng.uniform(-bound, bound, (n, 300))
    ids = list(range(1, n + 1))
    server = SecAggServer(7, fp, 0.5, None, seed=3)
    clients = {i: SecAggClient(i, 7, fp, 0.5) for i in ids}
    graph = server.collect_keys({i: clients[i].advertise() for i in ids})
    inbox = server.route_shares({i: clients[i].share_keys(server.roster, graph[i]) for i in ids})
    encoded = {i: encode(xs[i - 1], fp, np.random.default_rng(i)) for i in ids}
    assert all(np.abs(e.view(np.int16)).max() <= 127 for e in encoded.values())  # 8 bits
    masked = {i: clients[i].masked_input(encoded[i], inbox[i]) for i in ids}
    survivors = server.collect_masked(masked)
    total = server.unmask({i: clients[i].unmask(survivors) for i in survivors})
    plain = sum(encoded[i].view(np.int16).astype(np.int64) for i in ids)
    np.testing.assert_array_equal(total.view(np.int16).astype(np.int64), plain)


def test_quantized_secure_rounds_send_about_half_the_bytes():
    wide = BASE | WIDE | SECURE_LOCAL
    plain: list[dict] = []
    run_inprocess(parse_config(wide), plain.append)
    squeezed: list[dict] = []
    compression = {"uplink": "qsgd", "bits": 8, "error-feedback": False}
    run_inprocess(parse_config(wide | {"compression": compression}), squeezed.append)
    assert squeezed[-1]["status"] == "aggregated"
    assert plain[-1]["bytes-received"] / squeezed[-1]["bytes-received"] > 1.8


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (
            {
                "privacy": {
                    "dp": "client",
                    "clipping": "client",
                    "clip-norm": 1.0,
                    "noise-multiplier": 1.0,
                }
            },
            "sensitivity",
        ),
        ({}, "example counts"),
        (
            {"privacy": SECURE_LOCAL["privacy"], "compression": {"error-feedback": True}},
            "error-feedback = false",
        ),
    ],
)
def test_qsgd_under_secure_aggregation_is_refused_where_it_would_not_hold(settings, match):
    compression = {"uplink": "qsgd", "bits": 8, "error-feedback": False}
    compression |= settings.pop("compression", {})
    cfg = BASE | {"secagg": {"mode": "full"}} | settings | {"compression": compression}
    with pytest.raises(ConfigError, match=match):
        parse_config(cfg)
