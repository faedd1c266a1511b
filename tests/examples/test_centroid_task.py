"""An algorithm on typed statistics, written outside fedcore (examples/centroid_task.py): exact
in the clear, within the fixed-point bound under secure aggregation, accounted under
client-level DP, and a client that breaks the spec is rejected with the reason."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Context, Message
from sklearn.neighbors import NearestCentroid

import fedcore
from fedcore.apps import make_client_app
from fedcore.arrays import from_numpy, to_numpy
from fedcore.config import ConfigError, parse_config
from fedcore.keys import ARRAYS, PARTITION_ID, STATISTICS
from fedcore.server import run_server
from fedcore.tasks import get_task
from privacy.ledger import PrivacyLedger
from simulations.engines.inprocess import InProcessGrid
from strategies import build_strategy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASK = "centroid_task:ALGORITHM"
SMALL = {
    "data": {"num-clients": 10, "partition": "dirichlet", "alpha": 0.5},
    "train": {"rounds": 1},
    "evaluate": {"fraction": 0.0},
}

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the")


@pytest.fixture(autouse=True)
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _pooled(cfg):
    data = get_task(cfg.task).load_data(cfg)
    x = np.concatenate([c.x_train.numpy() for c in data.clients]).astype(np.float64)
    y = np.concatenate([c.y_train.numpy() for c in data.clients])
    return data, x, y


def _centroids(result) -> np.ndarray:
    return torch.load(result.path / "model.pt")["centroids"].numpy()


def test_plain_rounds_equal_the_pooled_centroids(tmp_path):
    result = fedcore.simulate(SMALL, task=TASK, out=tmp_path / "run")
    cfg = parse_config(SMALL | {"task": TASK})
    data, x, y = _pooled(cfg)
    reference = NearestCentroid().fit(x, y)
    np.testing.assert_allclose(_centroids(result), reference.centroids_, rtol=0, atol=1e-9)
    accuracy = reference.score(data.x_test.numpy(), data.y_test.numpy())
    assert result.summary["final_metrics"]["server-eval/accuracy"] == pytest.approx(accuracy)


def test_secure_rounds_are_within_the_fixed_point_bound(tmp_path):
    settings = SMALL | {"secagg": {"mode": "full", "frac-bits": 20}}
    result = fedcore.simulate(settings, task=TASK, out=tmp_path / "run")
    assert result.summary["final_metrics"]["train/secure-sum"] == 10
    cfg = parse_config(settings | {"task": TASK})
    _, x, y = _pooled(cfg)
    counts = np.bincount(y)
    # each client's weighted entry count * x / MAX_COUNT is rounded by < 2^-f; the counts
    # are integers, summed exactly; the server multiplies by MAX_COUNT and divides by them
    bound = 10 * 2.0**-20 * 10_000 / counts
    error = np.abs(_centroids(result) - NearestCentroid().fit(x, y).centroids_)
    assert error.max() > 0  # the encoding did round
    assert (error.max(axis=1) <= bound).all()


def test_client_level_dp_under_secure_aggregation(tmp_path):
    settings = SMALL | {
        "data": {"num-clients": 60, "partition": "iid"},
        "secagg": {"mode": "sparse"},
        "privacy": {"dp": "distributed", "clip-norm": 1.0, "target-epsilon": 8.0},
    }
    result = fedcore.simulate(settings, task=TASK, out=tmp_path / "run")
    summary = result.summary
    assert summary["final_metrics"]["train/secure-sum"] == 60
    assert 7.0 < summary["privacy"]["against_every_party"] <= 8.0
    assert summary["final_metrics"]["server-eval/accuracy"] > 0.5  # chance: 0.1
    events = PrivacyLedger.load(result.path / "ledger.jsonl").events
    # the server's release (against observers of the model, with sampling) and each
    # client's own record (against the server, which knows who took part)
    server = [e for e in events if e.client is None]
    assert len(server) == 1 and server[0].noise_multiplier > 0
    assert sorted(e.client for e in events if e.client is not None) == list(range(60))
    assert all(e.mechanism == "gaussian" and e.neighbouring == "client" for e in events)
    assert (result.path / "privacy_report.md").exists()


def test_central_client_level_dp_is_accounted(tmp_path):
    settings = SMALL | {"privacy": {"dp": "client", "clip-norm": 1.0, "target-epsilon": 2.0}}
    result = fedcore.simulate(settings, task=TASK, out=tmp_path / "run")
    assert result.summary["privacy"]["client_level_epsilon"] <= 2.0
    assert len(PrivacyLedger.load(result.path / "ledger.jsonl").events) == 1


def _cheat(node: int, scale: float):
    """A client mod that multiplies partition ``node``'s statistics by ``scale``."""

    def mod(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        if context.node_config[PARTITION_ID] == node and not reply.has_error():
            wire = to_numpy(reply.content[ARRAYS][STATISTICS]) * scale
            reply.content[ARRAYS] = ArrayRecord({STATISTICS: from_numpy(wire)})
        return reply

    return mod


@pytest.mark.parametrize(
    ("privacy", "scale", "reason"),
    [
        ({}, 1.5, "'weights' has entries that are not whole"),  # fractional counts
        ({}, 1e6, "'means' has an entry beyond its bound"),
        (
            {"dp": "client", "clipping": "client", "clip-norm": 0.5, "noise-multiplier": 1},
            1.8,
            "exceeds the clip",
        ),
    ],
)
def test_a_client_breaking_the_spec_is_rejected(privacy, scale, reason):
    cfg = parse_config(SMALL | {"task": TASK, "privacy": privacy})
    rounds = []
    app = make_client_app(cfg, mods=[_cheat(3, scale)])
    with InProcessGrid(cfg, client_app=app) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    (failure,) = rounds[0]["train-failures"]
    assert "bad statistics" in failure and reason in failure
    assert rounds[0]["aggregated-clients"] == 9


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"privacy": {"dp": "sample", "clip-norm": 1, "noise-multiplier": 1}}, "no per-example"),
        ({"strategy": {"name": "fedadam"}}, "its own server hook"),
    ],
)
def test_what_an_algorithm_cannot_take_is_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_strategy(parse_config(SMALL | {"task": TASK} | settings))


def _lie(wire: np.ndarray) -> np.ndarray:
    """The largest means a wire vector may hold (1.0), at a weight of 1 per class: each
    entry then claims a value of MAX_COUNT = 10^4 at that weight, the bound being 1."""
    lie = wire.copy()
    lie[:640], lie[640:] = 1.0, 1.0  # 10 classes x 64 features, then the 10 class weights
    return lie


def test_a_value_beyond_its_bound_at_its_weight_is_rejected():
    """Plain: an entry w x / W is checked against bound w / W, not only against the bound,
    so a client cannot claim x = W (before, this moved a centroid to 108, the bound at 1)."""
    cfg = parse_config(SMALL | {"task": TASK})

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if context.node_config[PARTITION_ID] == 3:
            wire = _lie(to_numpy(reply.content[ARRAYS][STATISTICS]))
            reply.content[ARRAYS] = ArrayRecord({STATISTICS: from_numpy(wire)})
        return reply

    rounds = []
    with InProcessGrid(cfg, client_app=make_client_app(cfg, mods=[mod])) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    (failure,) = rounds[0]["train-failures"]
    assert "beyond its bound 1 times its weight 'weights'" in failure


def test_under_secure_aggregation_a_lie_cannot_move_a_mean_past_the_bound(monkeypatch, tmp_path):
    """Secure aggregation hides the lie (every client tells it here); the mean of values
    within the bound is within it, so the server's mean is clamped there."""
    import clients.statistics

    honest = clients.statistics.contribution
    monkeypatch.setattr(clients.statistics, "contribution", lambda s, spec: _lie(honest(s, spec)))
    result = fedcore.simulate(SMALL | {"secagg": {"mode": "full"}}, task=TASK, out=tmp_path / "r")
    assert result.summary["final_metrics"]["train/secure-sum"] == 10
    assert np.abs(_centroids(result)).max() <= 1.0


def test_local_dp_rejects_a_reply_longer_than_its_noise_allows():
    cfg = parse_config(
        SMALL | {"task": TASK, "privacy": {"dp": "local", "clip-norm": 1.0, "target-epsilon": 8}}
    )
    rounds = []
    app = make_client_app(cfg, mods=[_cheat(3, 1e6)])
    with InProcessGrid(cfg, client_app=app) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    (failure,) = rounds[0]["train-failures"]
    assert "what local DP's noise reaches" in failure


def test_a_secure_sum_longer_than_the_clips_allow_is_rejected(monkeypatch):
    """Central client-level DP under secure aggregation: clients that skip the clip are
    caught in the unmasked sum, which k clipped vectors keep within k clip norms."""
    import clients.statistics

    monkeypatch.setattr(clients.statistics, "clip_l2", lambda vector, clip: vector)
    privacy = {"dp": "client", "clipping": "client", "clip-norm": 0.01, "noise-multiplier": 1}
    cfg = parse_config(SMALL | {"task": TASK, "secagg": {"mode": "full"}, "privacy": privacy})
    rounds = []
    with InProcessGrid(cfg) as grid:
        run_server(grid, cfg, on_round=rounds.append)
    (failure,) = rounds[0]["train-failures"]
    assert "a client did not clip" in failure and rounds[0]["status"] == "aborted"


def test_local_dp_noise_survives_the_secure_encoding(tmp_path):
    """The encoding range widens for the clients' own noise: with the same seeded noise the
    secure sum is the plain one (before, the clip to the spec's bound cut it: 67 apart)."""
    privacy = {"dp": "local", "clip-norm": 1.0, "target-epsilon": 8, "seeded-noise": True}
    plain = fedcore.simulate(SMALL | {"privacy": privacy}, task=TASK, out=tmp_path / "p")
    secure = fedcore.simulate(
        SMALL | {"privacy": privacy, "secagg": {"mode": "full"}}, task=TASK, out=tmp_path / "s"
    )
    np.testing.assert_allclose(_centroids(secure), _centroids(plain), atol=1e-4)


def test_an_encoding_the_statistics_would_break_is_refused_before_a_round(tmp_path):
    """Distributed DP widens the range for the clients' noise shares (here 1 + 8 x 1581):
    at 40 fraction bits float64 could not dither it, so no round starts."""
    privacy = {"dp": "distributed", "clip-norm": 5000.0, "noise-multiplier": 1.0}
    settings = SMALL | {"secagg": {"mode": "full", "frac-bits": 40}, "privacy": privacy}
    with pytest.raises(ConfigError, match="2\\^52"):
        fedcore.simulate(settings, task=TASK, out=tmp_path / "run")


def test_class_counts_are_encoded_as_whole_units_even_at_40_fraction_bits(tmp_path):
    """A count of up to 10^4 costs the encoding 10^4 x 2^-40 of range, not 10^4 (which at
    40 fraction bits passed 2^52 and was refused): the secure centroids are the plain ones."""
    plain = fedcore.simulate(SMALL, task=TASK, out=tmp_path / "p")
    settings = SMALL | {"secagg": {"mode": "full", "frac-bits": 40}}
    secure = fedcore.simulate(settings, task=TASK, out=tmp_path / "s")
    np.testing.assert_allclose(_centroids(secure), _centroids(plain), atol=1e-9)
