"""Task ``linear``: federated ridge regression and PCA on securely summed matrix products.

Rows are partitioned over clients (horizontal). Each client sends the products of its own
rows (:mod:`fedcore.tasks.linear.products`); the run sums them (under secure aggregation the
server sees the sums only) and the server solves the centralized problem on them:

- ``method = "ridge"`` (one round): ``X_i^T X_i`` (its upper triangle), ``X_i^T y_i``, and
  for the intercept ``X_i^T 1``, ``y_i^T 1``; the server solves the ridge system, which is
  scikit-learn's ``Ridge`` on the pooled rows.
- ``method = "pca"`` (one round): ``X_i^T X_i`` and ``X_i^T 1``; the server takes the
  leading eigenvectors of the pooled covariance.
- ``method = "subspace"`` (one product per round): ``X_i^T X_i V`` for the server's current
  orthonormal ``V`` (d x (components + oversample)); the server orthonormalises the
  centred product. For large d, where the d x d Gram is too big to send.

Every client also sends its row count (an integer, summed exactly). The bounds are public
(``[linear]``: a client clips its features and targets to them and holds at most
``max-rows`` rows), so each entry of each product has a public bound: secure aggregation
encodes within it, and the spec refuses a client that claims more.

Under client-level DP (``privacy.dp = "client"``, ``"distributed"`` or ``"local"``) the
unit of privacy is a client's whole data: the shared layers clip the client's whole wire
vector (all its products and its count together) to ``privacy.clip-norm`` and add Gaussian
noise to the sum; the server solves on the noised sums (post-processing). A client whose
vector is clipped is scaled down as a whole, which reweights its rows in the solution.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedcore import partition, seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import DATASETS, REGRESSION_DATASETS
from fedcore.datasets.base import Dataset
from fedcore.datasets.regression import load_regression
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks.algorithm import Algorithm, RoundContext, State
from fedcore.tasks.base import ClientData, FederatedData, ModelShape, ServerData
from fedcore.tasks.classification import load_federated, load_server_data
from fedcore.tasks.linear import products
from fedcore.tasks.linear.options import LinearOptions

# the statistics a client sends
ROWS, FEATURE_SUMS, GRAM = "rows", "feature-sums", "gram"
TARGET_SUM, CROSS, PRODUCT = "target-sum", "cross", "product"
# the global state
COEF, INTERCEPT = "coef", "intercept"
MEAN, COMPONENTS, VARIANCE, BASIS = "mean", "components", "variance", "basis"


# -- data ----------------------------------------------------------------------------------


def federate_regression(ds: Dataset, cfg: RunConfig) -> FederatedData:
    """``ds``'s training rows split over ``data.num-clients`` (iid, or quantity skew), each
    client holding out ``data.local-test-fraction`` of its rows."""
    d = cfg.data
    rng = seeding.numpy_rng(cfg.seed, seeding.PARTITION)
    n = len(ds.y_train)
    try:
        if d.partition == "iid":
            parts = partition.iid(n, d.num_clients, rng)
        else:
            parts = partition.quantity_skew(n, d.num_clients, d.alpha, rng, min_size=d.min_size)
    except ValueError as err:
        raise ConfigError(
            f"data.partition = {d.partition!r} cannot split {ds.name} ({n} rows) into "
            f"data.num-clients = {d.num_clients}: {err}"
        ) from None
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    clients = []
    for idx in parts:
        idx = rng.permutation(idx)
        n_test = min(round(len(idx) * d.local_test_fraction), len(idx) - 1)
        train, test = (torch.from_numpy(np.sort(i)) for i in (idx[n_test:], idx[:n_test]))
        clients.append(ClientData(x[train], y[train], x[test], y[test]))
    report = {
        "dataset": ds.name,
        "partition": d.partition,
        "num_clients": len(parts),
        "rows_per_client": [len(p) for p in parts],
    }
    x_test, y_test = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    return FederatedData(tuple(clients), x_test, y_test, ds.num_features, 0, report)


@functools.lru_cache(maxsize=4)
def load_data(cfg: RunConfig) -> FederatedData:
    """The clients' rows: a regression dataset, or (PCA) a labelled one whose labels are
    not used."""
    if cfg.data.dataset in REGRESSION_DATASETS:
        return federate_regression(load_regression(cfg.data.dataset), cfg)
    return load_federated(cfg.data, cfg.seed)


def load_server(cfg: RunConfig) -> ServerData:
    """The number of features and, when the server evaluates, the held-out test rows."""
    if cfg.data.dataset not in REGRESSION_DATASETS:
        return load_server_data(cfg)
    ds = load_regression(cfg.data.dataset)
    if not cfg.evaluate.server:
        return ServerData(ds.num_features, 0)
    return ServerData(ds.num_features, 0, torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))


# -- the hooks -------------------------------------------------------------------------------


def _options(cfg: RunConfig) -> LinearOptions:
    return cfg.linear


def _features(state: State) -> int:
    return int(np.shape(state[MEAN if MEAN in state else COEF])[-1])


def init(cfg: RunConfig, data: ModelShape, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Zeros (ridge, pca); for subspace iteration a random orthonormal start ``V`` (d x m)."""
    o, d = _options(cfg), data.num_features
    if o.method == "ridge":
        return {COEF: np.zeros(d), INTERCEPT: np.zeros(())}
    width = o.components + (o.oversample if o.method == "subspace" else 0)
    if width > d:
        raise ConfigError(
            f"linear.components = {o.components}"
            + (f" + linear.oversample = {o.oversample}" if o.method == "subspace" else "")
            + f" exceeds the data's {d} features"
        )
    state = {
        MEAN: np.zeros(d),
        COMPONENTS: np.zeros((o.components, d)),
        VARIANCE: np.zeros(o.components),
    }
    if o.method == "subspace":
        state[BASIS] = products.orthonormal(rng.standard_normal((d, width)))
    return state


def spec(cfg: RunConfig, state: State) -> Spec:
    """What a client sends for ``state``, each array with its public bound (``[linear]``:
    ``R`` rows of features within ``B_x`` and targets within ``B_y``): the row count
    (integer, ``R``), the feature sums (``R B_x``), the Gram's upper triangle
    (``R B_x^2``) or the product with the basis (``R B_x^2 sqrt(d)``), and for ridge the
    target sum (``R B_y``) and ``X^T y`` (``R B_x B_y``)."""
    o, d = _options(cfg), _features(state)
    r, bx, by = o.max_rows, o.feature_bound, o.target_bound
    arrays = {ROWS: ArraySpec((), INTEGER, r)}
    intercept = o.method != "ridge" or o.fit_intercept  # PCA always centres
    if intercept:
        arrays[FEATURE_SUMS] = ArraySpec((d,), bound=r * bx)
    if o.method == "subspace":
        width = np.shape(state[BASIS])[1]
        arrays[PRODUCT] = ArraySpec((d, width), bound=products.product_bound(r, bx, d))
    else:
        arrays[GRAM] = ArraySpec((products.packed_size(d),), bound=products.gram_bound(r, bx))
    if o.method == "ridge":
        if intercept:
            arrays[TARGET_SUM] = ArraySpec((), bound=r * by)
        arrays[CROSS] = ArraySpec((d,), bound=r * bx * by)
    return Spec.of(arrays)


def client(state: State, data: ClientData, context: RoundContext, rng: np.random.Generator):
    """The products of this client's rows (features and targets clipped to their public
    bounds first), as :func:`spec` declares them."""
    o = _options(context.cfg)
    x = np.clip(data.x_train.numpy().astype(np.float64), -o.feature_bound, o.feature_bound)
    n = len(x)
    if n > o.max_rows:
        raise ValueError(
            f"this client holds {n} rows, more than linear.max-rows = {o.max_rows} (the public "
            "bound its statistics are encoded and checked against)"
        )
    clipped = np.count_nonzero(np.abs(data.x_train.numpy()) > o.feature_bound)
    stats = {ROWS: np.array(float(n))}
    if o.method != "ridge" or o.fit_intercept:
        stats[FEATURE_SUMS] = x.sum(axis=0)
    if o.method == "subspace":
        basis = np.asarray(state[BASIS], np.float64)
        stats[PRODUCT] = x.T @ (x @ basis)  # never the d x d Gram
    else:
        stats[GRAM] = products.pack(x.T @ x)
    if o.method == "ridge":
        raw_y = data.y_train.numpy().astype(np.float64)
        y = np.clip(raw_y, -o.target_bound, o.target_bound)
        clipped += np.count_nonzero(np.abs(raw_y) > o.target_bound)
        if o.fit_intercept:
            stats[TARGET_SUM] = np.array(y.sum())
        stats[CROSS] = x.T @ y
    return stats, {"clipped-entries": float(clipped)}


def server(state: State, summed: Summed, cfg: RunConfig):
    """The centralized solution on the summed products; a round whose (under DP, noised)
    row count is not positive leaves the state as it is."""
    o = _options(cfg)
    rows = float(summed[ROWS])
    if not rows > 0:
        return dict(state), {"skipped": 1.0}
    d = _features(state)
    metrics = {"rows": rows}
    if o.method == "ridge":
        gram = products.unpack(summed[GRAM], d)
        if o.fit_intercept:
            coef, intercept = products.ridge(
                gram,
                summed[CROSS],
                o.alpha,
                rows=rows,
                feature_sums=summed[FEATURE_SUMS],
                target_sum=float(summed[TARGET_SUM]),
            )
        else:
            coef, intercept = products.ridge(gram, summed[CROSS], o.alpha)
        return {COEF: coef, INTERCEPT: np.array(intercept)}, metrics
    sums = summed[FEATURE_SUMS]
    if o.method == "pca":
        gram = products.unpack(summed[GRAM], d)
        mean, components, variance = products.pca(gram, sums, rows, o.components)
        return {MEAN: mean, COMPONENTS: components, VARIANCE: variance}, metrics
    basis = np.asarray(state[BASIS], np.float64)
    next_basis, ritz = products.subspace_step(basis, summed[PRODUCT], sums, rows)
    k = o.components
    components = next_basis[:, :k].T
    previous = np.asarray(state[COMPONENTS])
    if np.any(previous):  # how far the leading subspace moved: the convergence signal
        metrics["subspace-change"] = float(products.principal_angles(previous, components).max())
    new = {MEAN: sums / rows, COMPONENTS: components, VARIANCE: ritz[:k], BASIS: next_basis}
    return new, metrics


def evaluate(state: State, x, y, cfg: RunConfig) -> dict[str, float]:
    """Ridge: the test rows' mean squared error and R^2. PCA: the share of the test rows'
    variance (about the training mean) that the components explain."""
    x = np.asarray(x, np.float64)
    if _options(cfg).method == "ridge":
        y = np.asarray(y, np.float64)
        error = x @ state[COEF] + float(state[INTERCEPT]) - y
        mse = float(np.mean(error**2))
        return {"mse": mse, "r2": 1.0 - mse / float(np.var(y))}
    centred = x - state[MEAN]
    total = float(np.sum(centred**2))
    explained = float(np.sum((centred @ np.asarray(state[COMPONENTS]).T) ** 2))
    return {"explained-variance": explained / total if total > 0 else 0.0}


def check_config(cfg: RunConfig) -> None:
    """ConfigError naming the setting unless ``cfg`` fits the method."""
    o, d = _options(cfg), cfg.data
    if o.method == "ridge" and d.dataset not in REGRESSION_DATASETS:
        raise ConfigError(
            f"linear.method = 'ridge' regresses real targets: data.dataset must be one of "
            f"{', '.join(REGRESSION_DATASETS)}, not {d.dataset!r}"
        )
    if d.dataset not in (*REGRESSION_DATASETS, *DATASETS):
        raise ConfigError(
            f"task 'linear' reads rows of features: data.dataset = {d.dataset!r} is for "
            "another task"
        )
    if d.dataset in REGRESSION_DATASETS and d.partition not in ("iid", "quantity"):
        raise ConfigError(
            f"data.partition = {d.partition!r} needs labels; a regression's rows are split "
            "'iid' or 'quantity'"
        )
    if o.method in ("ridge", "pca") and cfg.train.rounds != 1:
        raise ConfigError(
            f"linear.method = {o.method!r} is exact in one round: set train.rounds = 1 (a "
            "second round would resend the same sums and, under DP, spend privacy again)"
        )


TASK = Algorithm(
    name="linear",
    load_data=load_data,
    init=init,
    spec=spec,
    client=client,
    server=server,
    evaluate=evaluate,
    check_config=check_config,
    load_server=load_server,
    sections={"linear": LinearOptions},
)
