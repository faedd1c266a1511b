"""Horizontal task ``linear``: ridge and PCA from securely summed products equal the
centralized solution on the pooled rows (scikit-learn), exactly in the clear and within the
fixed-point bound under secure aggregation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from fedcore.config import ConfigError, parse_config
from fedcore.statistics import Summed, contribution, decode
from fedcore.tasks import checked_task
from fedcore.tasks.algorithm import RoundContext
from fedcore.tasks.base import ClientData
from fedcore.tasks.linear import algorithm, products
from simulations.engines.inprocess import run_inprocess

RIDGE = {
    "task": "linear",
    "seed": 0,
    "data": {"dataset": "diabetes", "num-clients": 5, "partition": "iid", "local-test-fraction": 0},
    "train": {"rounds": 1},
    "evaluate": {"fraction": 0.0},
    "linear": {"method": "ridge", "alpha": 0.5, "target-bound": 400.0, "max-rows": 1000},
}
DIGITS_PCA = RIDGE | {
    "data": {"dataset": "digits", "num-clients": 4, "partition": "dirichlet", "alpha": 0.5},
    "linear": {"method": "pca", "components": 5},
}


def _run(raw: dict) -> tuple[dict[str, np.ndarray], list[dict]]:
    rounds = []
    arrays = run_inprocess(parse_config(raw), rounds.append)
    return {k: v.numpy() for k, v in arrays.items()}, rounds


def _pooled(raw: dict) -> tuple[np.ndarray, np.ndarray]:
    data = algorithm.load_data(parse_config(raw))
    x = np.concatenate([c.x_train.numpy() for c in data.clients]).astype(np.float64)
    return x, np.concatenate([c.y_train.numpy() for c in data.clients]).astype(np.float64)


def _client_data(x: np.ndarray, y: np.ndarray) -> ClientData:
    empty = torch.zeros((0, x.shape[1]))
    return ClientData(torch.from_numpy(x), torch.from_numpy(y), empty, torch.zeros(0))


@given(d=st.integers(1, 12))
@settings(max_examples=20, deadline=None)
def test_pack_unpack_is_the_symmetric_matrix(d):
    m = np.random.default_rng(d).standard_normal((d, d))
    m = m + m.T
    assert np.array_equal(products.unpack(products.pack(m), d), m)
    assert products.pack(m).shape == (products.packed_size(d),)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_one_round_equals_sklearn_ridge_on_pooled_rows(fit_intercept):
    raw = RIDGE | {"linear": RIDGE["linear"] | {"fit-intercept": fit_intercept}}
    state, rounds = _run(raw)
    x, y = _pooled(raw)
    reference = Ridge(alpha=0.5, fit_intercept=fit_intercept).fit(x, y)
    assert rounds[-1]["status"] == "aggregated"
    np.testing.assert_allclose(state["coef"], reference.coef_, rtol=0, atol=1e-8)
    assert abs(float(state["intercept"]) - reference.intercept_) < 1e-8
    if fit_intercept:
        assert rounds[-1]["server-eval"]["r2"] > 0.3  # the held-out diabetes rows


def _round_by_hooks(raw: dict, parts: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """One round through the hooks and the wire format (contribution, sum, decode)."""
    cfg = parse_config(raw)
    task = algorithm.TASK
    state = task.init(cfg, type("Shape", (), {"num_features": parts[0][0].shape[1]}), None)
    spec = task.spec(cfg, state)
    total = np.zeros(spec.size)
    for i, (x, y) in enumerate(parts):
        stats, _ = task.client(state, _client_data(x, y), RoundContext(cfg, 1, i), None)
        total += contribution(stats, spec)
    new, _ = task.server(state, decode(total, spec, len(parts)), cfg)
    return new


@given(
    clients=st.integers(1, 6),
    d=st.integers(1, 8),
    alpha=st.sampled_from([0.01, 1.0, 10.0]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_ridge_from_summed_products_equals_pooled_ridge(clients, d, alpha, seed):
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(clients):
        n = int(rng.integers(1, 30))
        x = rng.uniform(-1, 1, (n, d))
        parts.append((x, x @ rng.standard_normal(d) + rng.normal(0, 0.1, n)))
    raw = RIDGE | {"linear": RIDGE["linear"] | {"alpha": alpha}}
    state = _round_by_hooks(raw, parts)
    x, y = (np.concatenate(v) for v in zip(*parts, strict=True))
    reference = Ridge(alpha=alpha).fit(x, y)
    scale = 1 + np.abs(reference.coef_).max()
    np.testing.assert_allclose(state["coef"], reference.coef_, rtol=0, atol=1e-8 * scale)
    assert abs(float(state["intercept"]) - reference.intercept_) < 1e-8 * scale


def _secure_error_bound(x: np.ndarray, y: np.ndarray, alpha: float, delta: float):
    """A bound on |w' - w| (max entry) and on the intercept's error when every summed entry
    of G, s, X^T y and sum(y) is off by at most ``delta`` (n is exact): perturbation of the
    centred system (A + E) w' = c + e, |w' - w| <= (|e| + |E| |w|) / (lambda_min(A) - |E|)."""
    n, d = x.shape
    s, t = x.sum(0), y.sum()
    a = products.centred_gram(x.T @ x, s, n) + alpha * np.eye(d)
    w = np.linalg.solve(a, x.T @ y - s * t / n)
    ds = math.sqrt(d) * delta  # |Delta s|
    e_mat = d * delta + (2 * np.linalg.norm(s) * ds + ds**2) / n
    e_vec = ds + (ds * abs(t) + np.linalg.norm(s) * delta + ds * delta) / n
    dw = (e_vec + e_mat * np.linalg.norm(w)) / (np.linalg.eigvalsh(a).min() - e_mat)
    dintercept = delta / n + (ds * (np.linalg.norm(w) + dw) + np.linalg.norm(s) * dw) / n
    return dw, dintercept


def test_secure_aggregation_ridge_is_within_the_fixed_point_bound():
    raw = RIDGE | {"secagg": {"mode": "full"}}
    state, rounds = _run(raw)
    cfg = parse_config(raw)
    x, y = _pooled(raw)
    reference = Ridge(alpha=0.5).fit(x, y)
    delta = cfg.data.num_clients * 2.0**-cfg.secagg.frac_bits  # per summed entry
    dw, dintercept = _secure_error_bound(x, y, 0.5, delta)
    error = np.abs(state["coef"] - reference.coef_).max()
    assert rounds[-1]["status"] == "aggregated"
    assert 0 < error <= dw  # rounded (not exact), and within the bound
    assert abs(float(state["intercept"]) - reference.intercept_) <= dintercept


def test_pca_equals_centralized_svd():
    state, _ = _run(DIGITS_PCA)
    x, _ = _pooled(DIGITS_PCA)
    reference = PCA(5, svd_solver="full").fit(x)
    assert products.principal_angles(state["components"], reference.components_).max() < 1e-6
    np.testing.assert_allclose(state["variance"], reference.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(state["mean"], reference.mean_, atol=1e-12)


def test_subspace_iteration_converges_to_centralized_components():
    raw = DIGITS_PCA | {
        "train": {"rounds": 40},
        "linear": {"method": "subspace", "components": 5, "oversample": 5},
    }
    state, rounds = _run(raw)
    x, _ = _pooled(raw)
    reference = PCA(5, svd_solver="full").fit(x)
    assert products.principal_angles(state["components"], reference.components_).max() < 1e-6
    np.testing.assert_allclose(state["variance"], reference.explained_variance_, rtol=1e-8)
    changes = [r["train"]["subspace-change"] for r in rounds[1:]]
    assert changes[-1] < changes[0]


def test_subspace_client_sends_no_gram_matrix():
    cfg = parse_config(DIGITS_PCA | {"train": {"rounds": 3}, "linear": {"method": "subspace"}})
    state = algorithm.TASK.init(
        cfg, type("Shape", (), {"num_features": 64}), np.random.default_rng(0)
    )
    spec = algorithm.TASK.spec(cfg, state)
    assert set(spec.names) == {"rows", "feature-sums", "product"}
    assert spec.size == 1 + 64 + 64 * 7  # not 64 * 65 / 2


def test_client_level_dp_noises_the_sums_and_records_the_ledger():
    raw = RIDGE | {"privacy": {"dp": "client", "clip-norm": 1e4, "noise-multiplier": 1.0}}
    state, rounds = _run(raw)
    events = rounds[-1]["privacy-events"]
    assert [e["neighbouring"] for e in events] == ["client"]  # the unit: a client's data
    assert np.isfinite(state["coef"]).all()
    x, y = _pooled(raw)
    assert np.abs(state["coef"] - Ridge(alpha=0.5).fit(x, y).coef_).max() > 1e-3  # noised


def test_a_client_over_max_rows_is_refused():
    cfg = parse_config(RIDGE | {"linear": RIDGE["linear"] | {"max-rows": 3}})
    state = algorithm.TASK.init(cfg, type("Shape", (), {"num_features": 2}), None)
    data = _client_data(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"linear\.max-rows"):
        algorithm.TASK.client(state, data, RoundContext(cfg, 1, 0), None)


def test_features_beyond_the_public_bound_are_clipped_and_counted():
    cfg = parse_config(RIDGE | {"linear": RIDGE["linear"] | {"feature-bound": 0.5}})
    state = algorithm.TASK.init(cfg, type("Shape", (), {"num_features": 1}), None)
    data = _client_data(np.array([[2.0], [0.1]]), np.array([1.0, 2.0]))
    stats, metrics = algorithm.TASK.client(state, data, RoundContext(cfg, 1, 0), None)
    assert metrics["clipped-entries"] == 1
    np.testing.assert_allclose(stats["gram"], [0.25 + 0.01])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"data": {"dataset": "digits"}}, "linear.method = 'ridge'"),
        ({"train": {"rounds": 2}}, "train.rounds = 1"),
        ({"data": {"dataset": "diabetes", "partition": "dirichlet"}}, "needs labels"),
    ],
)
def test_settings_the_method_cannot_take_are_refused(changes, match):
    raw = {k: (RIDGE.get(k, {}) | v if isinstance(v, dict) else v) for k, v in changes.items()}
    with pytest.raises(ConfigError, match=match):
        checked_task(parse_config(RIDGE | raw))


def test_summed_rows_not_positive_leaves_the_state():
    cfg = parse_config(RIDGE)
    state = algorithm.TASK.init(cfg, type("Shape", (), {"num_features": 2}), None)
    spec = algorithm.TASK.spec(cfg, state)
    summed = Summed(spec, {n: np.zeros(spec[n].shape) for n in spec.names}, 0)
    new, metrics = algorithm.TASK.server(state, summed, cfg)
    assert metrics == {"skipped": 1.0} and new.keys() == state.keys()
