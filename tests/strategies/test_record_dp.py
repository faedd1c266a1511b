"""Record-level DP (``privacy.dp = "record"``): the server noises the sums by what one
record can change, as the algorithm declares it. The declarations are checked against the
hooks (remove a record, measure the change), the noise against its scale, the ledger
against the target epsilon."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.arrays import to_numpy
from fedcore.cli import scenario_path
from fedcore.config import ConfigError, load_scenario, parse_config
from fedcore.statistics import contribution
from fedcore.tasks import RoundContext, checked_task, get_algorithm
from fedcore.tasks.kmeans.algorithm import CENTROIDS, SEEDED
from privacy.accounting import epsilon
from privacy.ledger import PrivacyLedger
from privacy.plan import record_noise
from simulations import runner
from simulations.engines.inprocess import run_inprocess
from strategies.statistics import StatisticsStrategy

RECORD = {"privacy.dp": "record", "privacy.target-epsilon": 2.0}


def _bayesnet(**overrides):
    return load_scenario(scenario_path("asia-bayesnet"), {"train.rounds": 3} | overrides)


def _change(algorithm, cfg, state, with_, without, pid=0):
    """The change of one client's wire vector when ``without`` lacks one of its records."""
    spec = algorithm.spec(cfg, state)
    vectors = []
    for data in (with_, without):
        stats, _ = algorithm.client(
            state, data, RoundContext(cfg, 2, pid), np.random.default_rng(0)
        )
        vectors.append(contribution(stats, spec))
    return vectors[0] - vectors[1]


def test_one_record_moves_the_count_tables_by_the_declared_sensitivity():
    cfg = _bayesnet(**RECORD)
    algorithm = get_algorithm("bayesnet")
    data = algorithm.load_data(cfg)
    state = algorithm.init(cfg, data, np.random.default_rng(0))
    client = data.clients[0]
    fewer = type(client)(client.x_train[1:], client.y_train[1:], client.x_test, client.y_test)
    delta = _change(algorithm, cfg, state, client, fewer)
    l1, l2 = algorithm.record_sensitivity(cfg, state)
    assert np.abs(delta).sum() == l1 and np.isclose(np.linalg.norm(delta), l2)  # tight


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), seeded=st.booleans(), d=st.integers(1, 6))
def test_one_point_moves_the_kmeans_sums_by_at_most_the_declared_sensitivity(seed, seeded, d):
    cfg = parse_config(
        {
            "task": "kmeans",
            "kmeans": {"k": 3, "init": "random"},
            "evaluate": {"fraction": 0.0},
            "privacy": {"dp": "record", "noise-multiplier": 1.0},
        }
    )
    rng = np.random.default_rng(seed)
    state = {CENTROIDS: rng.random((3, d)), SEEDED: np.array(float(seeded))}
    x = rng.uniform(-2, 2, (int(rng.integers(1, 20)), d))  # beyond the bound: clipped
    delta = _change(get_algorithm("kmeans"), cfg, state, _Points(x), _Points(x[1:]))
    l1, l2 = get_algorithm("kmeans").record_sensitivity(cfg, state)
    assert np.abs(delta).sum() <= l1 * (1 + 1e-12) and np.linalg.norm(delta) <= l2 * (1 + 1e-12)


class _Points:
    def __init__(self, x):
        self.x_train = x


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace", "discrete-gaussian"])
def test_the_noise_has_the_scale_of_the_sensitivity(mechanism):
    cfg = _bayesnet(**RECORD, **{"privacy.mechanism": mechanism, "privacy.seeded-noise": True})
    algorithm = checked_task(cfg)
    strategy = StatisticsStrategy(algorithm, cfg)
    strategy._state = algorithm.init(cfg, algorithm.load_data(cfg), np.random.default_rng(0))
    strategy._spec = algorithm.spec(cfg, strategy._state)  # (as configure_train sets them)
    noise = strategy._noised(1, np.zeros(100_000), 10)  # (any length: many draws)
    l1, l2 = algorithm.record_sensitivity(cfg, strategy._state)
    z = record_noise(cfg)
    if mechanism == "laplace":  # Laplace(b): mean |x| = b
        assert np.isclose(np.abs(noise).mean(), z * l1, rtol=0.05)
    else:
        assert np.isclose(noise.std(), z * l2, rtol=0.05)
    if mechanism == "discrete-gaussian":  # counts stay whole
        assert np.array_equal(noise, np.rint(noise))
    (event,) = strategy.last_dp_events
    assert event["neighbouring"] == "record" and event["mechanism"] == mechanism


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace", "discrete-gaussian"])
def test_a_record_dp_run_spends_its_target_epsilon_and_reports_it(tmp_path, mechanism):
    cfg = _bayesnet(**RECORD, **{"privacy.mechanism": mechanism})
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    ledger = PrivacyLedger.load(result.path / "ledger.jsonl")
    assert len(ledger) == 3 and {e.neighbouring for e in ledger.events} == {"record"}
    spent = epsilon(ledger.events, cfg.privacy.delta, cfg.privacy.accountant)
    assert 0.95 * 2.0 <= spent <= 2.0
    assert "Record-level DP" in (result.path / "privacy_report.md").read_text()


def test_kmeans_under_record_dp_runs_and_keeps_the_centroids_in_bounds():
    cfg = load_scenario(scenario_path("iris-kmeans"), RECORD | {"kmeans.init": "random"})
    state = run_inprocess(cfg, lambda record: None)
    assert np.abs(to_numpy(state[CENTROIDS])).max() <= cfg.kmeans.bound


def test_settings_record_dp_cannot_take_are_refused():
    with pytest.raises(ConfigError, match="declares no record sensitivity"):
        checked_task(
            parse_config(
                {
                    "privacy": {"dp": "record", "noise-multiplier": 1.0},
                    "evaluate": {"fraction": 0.0},
                }
            )
        )
    with pytest.raises(ConfigError, match="clip-norm does not apply"):
        parse_config({"privacy": {"dp": "record", "noise-multiplier": 1.0, "clip-norm": 1.0}})
    with pytest.raises(ConfigError, match=r"applies to privacy\.dp = 'record' only"):
        parse_config(
            {
                "privacy": {
                    "dp": "client",
                    "noise-multiplier": 1.0,
                    "clip-norm": 1.0,
                    "mechanism": "laplace",
                }
            }
        )


def test_integer_noise_is_refused_for_real_valued_sums():
    """Integer noise on a real-valued sum leaves neighbouring outputs on disjoint supports:
    no privacy at all."""
    cfg = load_scenario(
        scenario_path("iris-kmeans"),
        RECORD | {"kmeans.init": "random", "privacy.mechanism": "discrete-gaussian"},
    )
    with pytest.raises(ConfigError, match="hides nothing of k-means' real-valued sums"):
        checked_task(cfg)
