"""Federated k-means: a round is the centralized Lloyd step on the pooled data (plain to
1e-9, secure within the fixed-point bound), against scikit-learn and a brute-force loop."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from fedcore.arrays import from_numpy, to_numpy
from fedcore.cli import scenario_path
from fedcore.config import ConfigError, load_scenario, parse_config
from fedcore.keys import ARRAYS, METRICS, NUM_EXAMPLES, STATISTICS
from fedcore.statistics import StatisticsError, contribution, decode
from fedcore.tasks import RoundContext, get_algorithm
from fedcore.tasks.kmeans import lloyd
from fedcore.tasks.kmeans.algorithm import CENTROIDS, SEEDED
from simulations.engines.inprocess import InProcessGrid, run_inprocess
from strategies.statistics import StatisticsStrategy

KMEANS = get_algorithm("kmeans")


def _brute_force_step(x, centroids):
    """One Lloyd step, a point at a time: the reference for the vectorized math."""
    k = len(centroids)
    sums, counts = np.zeros_like(centroids), np.zeros(k)
    for point in x:
        j = min(range(k), key=lambda j: (float(((point - centroids[j]) ** 2).sum()), j))
        sums[j] += point
        counts[j] += 1
    return np.array([sums[j] / counts[j] if counts[j] else centroids[j] for j in range(k)])


def _points(draw, n, d):
    return np.array(draw(st.lists(st.floats(0, 1), min_size=n * d, max_size=n * d))).reshape(n, d)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_summed_client_statistics_give_the_pooled_lloyd_step(data):
    """Any split of the points into clients sums to the pooled statistics, and the step on
    them equals the brute-force step on the pooled points."""
    d, k = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    x = _points(data.draw, data.draw(st.integers(1, 30)), d)
    centroids = _points(data.draw, k, d)
    owners = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(x), max_size=len(x))))
    parts = [lloyd.cluster_stats(x[owners == c], centroids) for c in range(5)]
    total = sum(parts[1:], parts[0])
    pooled = lloyd.cluster_stats(x, centroids)
    np.testing.assert_allclose(total.sums, pooled.sums, atol=1e-12)
    np.testing.assert_array_equal(total.counts, pooled.counts)
    np.testing.assert_allclose(total.costs.sum(), lloyd.cost(x, centroids), atol=1e-12)
    np.testing.assert_allclose(
        lloyd.lloyd_step(centroids, total.sums, total.counts),
        _brute_force_step(x, centroids),
        atol=1e-12,
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 6), d=st.integers(1, 5))
def test_a_step_equals_scikit_learns_lloyd_iteration(seed, k, d):
    rng = np.random.default_rng(seed)
    x = rng.random((60, d))
    centroids = x[rng.choice(60, k, replace=False)]  # every cluster holds its own point
    ours = lloyd.lloyd_step(centroids, *dataclasses.astuple(lloyd.cluster_stats(x, centroids))[:2])
    theirs = KMeans(k, init=centroids, n_init=1, max_iter=1, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(ours, theirs.cluster_centers_, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_the_hooks_through_the_wire_vector_give_the_pooled_step(data):
    """The algorithm's client and server hooks around the shared wire vector (contribution,
    sum, decode): the pooled step, whichever client holds which points, an empty cluster
    and a client without points included."""
    clients, k, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4)), 3
    cfg = parse_config({"task": "kmeans", "kmeans": {"k": k}, "data": {"num-clients": clients}})
    x = _points(data.draw, data.draw(st.integers(0, 25)), d)
    owners = np.array(
        data.draw(st.lists(st.integers(0, clients - 1), min_size=len(x), max_size=len(x))),
        dtype=int,
    )
    state = {CENTROIDS: _points(data.draw, k, d), SEEDED: np.array(1.0)}
    spec = KMEANS.spec(cfg, state)
    total = np.zeros(spec.size)
    for c in range(clients):
        mine = _ClientData(x[owners == c])
        stats, _ = KMEANS.client(state, mine, RoundContext(cfg, 2, c), np.random.default_rng(c))
        total += contribution(stats, spec)
    new, metrics = KMEANS.server(state, decode(total, spec, clients), cfg)
    np.testing.assert_allclose(new[CENTROIDS], _brute_force_step(x, state[CENTROIDS]), atol=1e-9)
    np.testing.assert_allclose(metrics["inertia"], lloyd.cost(x, state[CENTROIDS]), atol=1e-9)


@dataclasses.dataclass
class _ClientData:
    x_train: np.ndarray


def _npz(tmp_path, clients, k, d, seed=0):
    """Blobs around k centres, each point given a client (skewed: a client holds mostly one
    blob), as the user's own NPZ file."""
    rng = np.random.default_rng(seed)
    centres = rng.random((k, d))
    y = rng.integers(0, k, 300)
    x = np.clip(centres[y] + rng.normal(0, 0.05, (300, d)), 0, 1)
    client = np.where(rng.random(300) < 0.7, y % clients, rng.integers(0, clients, 300))
    path = tmp_path / f"blobs-{clients}-{k}-{d}.npz"
    np.savez(path, x=x, y=y, client=client)
    return path


def _run(path, clients, k, rounds, **overrides):
    cfg = load_scenario(
        scenario_path("iris-kmeans"),
        {
            "data.dataset": "files",
            "data.train-file": str(path),
            "data.partition": "natural",
            "data.num-clients": clients,
            "kmeans.k": k,
            "train.rounds": rounds,
        }
        | overrides,
    )
    return cfg, {k: to_numpy(v) for k, v in run_inprocess(cfg, lambda record: None).items()}


@pytest.mark.parametrize(("clients", "k", "d"), [(3, 3, 2), (5, 4, 6)])
@pytest.mark.parametrize("init", ["kfed", "kmeans++", "random"])
def test_rounds_equal_centralized_lloyd_from_the_same_seeds(tmp_path, clients, k, d, init):
    """Round 1 seeds; each further round is scikit-learn's Lloyd iteration on the pooled
    points from the previous centroids: to 1e-9 plain, and under secure aggregation within
    the fixed-point bound (clients x max-weight x 2^-frac-bits on a sum, over its count)."""
    path = _npz(tmp_path, clients, k, d)
    cfg, seeded = _run(path, clients, k, 1, **{"kmeans.init": init})
    assert seeded[SEEDED] == 1
    x = np.concatenate([np.asarray(c.x_train) for c in KMEANS.load_data(cfg).clients])
    expected = _two_steps(x, seeded[CENTROIDS])
    _, plain = _run(path, clients, k, 3, **{"kmeans.init": init})
    np.testing.assert_allclose(plain[CENTROIDS], expected, atol=1e-9)
    secure = {"kmeans.init": init, "secagg.mode": "full", "secagg.frac-bits": 32}
    _, secure = _run(path, clients, k, 3, **secure)
    per_sum = clients * cfg.secagg.max_weight * 2.0**-32
    np.testing.assert_allclose(secure[CENTROIDS], expected, atol=10 * per_sum)


def _two_steps(x, centroids):
    for _ in range(2):
        centroids = _brute_force_step(x, centroids)
    return centroids


def test_iris_scenario_clusters_the_species():
    """The scenario as shipped (NVFlare's three sites): k-FED seeding and Lloyd's rounds
    reach NVFlare's anchor, homogeneity about 0.78, on the held-out flowers."""
    cfg = load_scenario(scenario_path("iris-kmeans"))
    records = []
    run_inprocess(cfg, records.append)
    assert records[-1]["server-eval"]["homogeneity"] > 0.7
    inertias = [r["train"]["inertia"] for r in records[1:]]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(inertias))  # Lloyd never goes up


def test_mini_batch_rounds_take_scikit_learns_minibatch_step():
    rng = np.random.default_rng(3)
    centroids, x = rng.random((3, 2)), rng.random((40, 2))
    seen = np.array([5.0, 0.0, 2.0])
    s = lloyd.cluster_stats(x, centroids)
    moved, total = lloyd.minibatch_step(centroids, seen, s.sums, s.counts)
    expected = (seen[:, None] * centroids + s.sums) / (seen + s.counts)[:, None]
    np.testing.assert_allclose(moved, expected)
    np.testing.assert_array_equal(total, seen + s.counts)


@pytest.mark.parametrize("dp", ["client", "distributed"])
def test_client_level_dp_noises_the_sums_and_is_accounted(tmp_path, dp):
    """Under DP the sums and counts travel on one scale, clipped and noised as one vector:
    with a clip no client reaches and almost no noise, the rounds are the exact ones; with
    noise, every release is in the ledger and the centroids stay within the bound."""
    path = _npz(tmp_path, 5, 3, 2)
    overrides = {
        "privacy.dp": dp,
        "privacy.clip-norm": 400.0,
        "privacy.noise-multiplier": 1e-5,
        "kmeans.init": "random",
    } | ({"secagg.mode": "full"} if dp == "distributed" else {})
    _, exact = _run(path, 5, 3, 3, **{"kmeans.init": "random"})
    cfg, quiet = _run(path, 5, 3, 3, **overrides)
    np.testing.assert_allclose(quiet[CENTROIDS], exact[CENTROIDS], atol=1e-2)
    cfg, noisy = _run(path, 5, 3, 3, **overrides | {"privacy.noise-multiplier": 1.0})
    assert np.abs(noisy[CENTROIDS]).max() <= cfg.kmeans.bound
    records = []
    run_inprocess(cfg, records.append)
    assert all(r["privacy-events"] for r in records)


def test_seeding_blocks_are_refused_under_dp():
    cfg = parse_config(
        {
            "task": "kmeans",
            "kmeans": {"init": "kfed"},
            "privacy": {"dp": "client", "clip-norm": 1.0, "noise-multiplier": 1.0},
            "evaluate": {"fraction": 0.0},
        }
    )
    with pytest.raises(ConfigError, match=r"kmeans\.init = 'random'"):
        KMEANS.check_config(cfg)


def test_a_malformed_reply_is_rejected_and_the_rest_summed():
    cfg = parse_config({"task": "kmeans", "kmeans": {"k": 2}, "data": {"num-clients": 4}})
    state = {CENTROIDS: np.array([[0.0, 0.0], [1.0, 1.0]]), SEEDED: np.array(1.0)}
    spec = KMEANS.spec(cfg, state)
    good = {
        "sums": np.array([[0.1, 0.2], [0.9, 0.8]]),  # (as sent without DP: their means)
        "costs": np.zeros(2),
        "counts": np.array([3.0, 2.0]),
    }
    with pytest.raises(StatisticsError, match="not whole"):
        contribution(good | {"counts": np.array([1.5, 2.0])}, spec)
    wire = contribution(good, spec)
    forged = [wire.copy() for _ in range(3)]
    forged[0][-1] = 0.5  # a fractional count
    forged[1][0] = 1.0  # a mean of 10^4 x the bound, claimed for a count of 3
    forged[2] = wire[:-1]  # the wrong length
    with InProcessGrid(cfg) as grid:
        strategy = StatisticsStrategy(KMEANS, cfg)
        arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in state.items()})
        msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
        grid.push_messages(msgs)
        replies = [_reply(m, w) for m, w in zip(msgs, [wire, *forged], strict=True)]
        new, _ = strategy.aggregate_train(1, iter(replies))
    assert len(strategy.last_failures) == 3
    np.testing.assert_allclose(to_numpy(new[CENTROIDS]), good["sums"])


def _reply(msg, wire):
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({STATISTICS: from_numpy(np.asarray(wire))}),
            METRICS: MetricRecord({NUM_EXAMPLES: 5}),
        }
    )
    return Message(content, reply_to=msg)


def test_settings_it_cannot_take_are_refused():
    with pytest.raises(ConfigError, match="labelled examples"):
        get_algorithm("kmeans").check_config(
            parse_config({"task": "kmeans", "data": {"dataset": "cora", "partition": "louvain"}})
        )
    with pytest.raises(ConfigError, match=r"kmeans\.k"):
        parse_config({"task": "kmeans", "kmeans": {"k": 0}})


def test_the_run_ends_at_lloyds_fixed_point(tmp_path):
    """Once a step leaves every centroid where it was, later rounds would only repeat it:
    the run ends there, its last record says why, and the summary says completed."""
    from simulations import runner

    cfg = load_scenario(scenario_path("iris-kmeans"), {"train.rounds": 40})
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    rounds = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    assert len(rounds) < 40 and "kmeans finished" in rounds[-1]["stopped"]
    assert json.loads((result.path / "summary.json").read_text())["status"] == "completed"
    assert all("stopped" not in r for r in rounds[:-1])


def test_a_client_beyond_the_count_bound_is_told_which_setting_bounds_it():
    cfg = parse_config({"task": "kmeans", "secagg": {"max-weight": 10.0}})
    state = {CENTROIDS: np.zeros((3, 2)), SEEDED: np.array(1.0)}
    many = _ClientData(np.zeros((11, 2)))
    with pytest.raises(ValueError, match=r"11 points, more than secagg\.max-weight = 10"):
        KMEANS.client(state, many, RoundContext(cfg, 2, 0), np.random.default_rng(0))


def test_mini_batches_are_refused_under_record_dp():
    """A seeded batch draw lets one record change which points a client's batch holds:
    more than the one point record-level DP's sensitivity covers."""
    privacy = {"dp": "record", "noise-multiplier": 1.0}
    cfg = parse_config(
        {"task": "kmeans", "kmeans": {"batch-size": 5, "init": "random"}, "privacy": privacy}
    )
    with pytest.raises(ConfigError, match=r"kmeans\.batch-size with privacy\.dp = 'record'"):
        KMEANS.check_config(cfg)
