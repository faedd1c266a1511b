"""An algorithm of your own, outside fedcore: a federated nearest-centroid classifier.

No neural network and no weight delta: each client sends, per class, the mean of its
examples' features and how many it has (a per-row weight), and the server's state is the
pooled class means. Under secure aggregation the server learns only the cohort's sums, which
is exactly what the means need. Nothing in fedcore is edited: a scenario names the algorithm
by its import path, and this folder only has to be on the Python path.

    PYTHONPATH=examples .venv/bin/fedcore simulate --set task=centroid_task:ALGORITHM \\
        --set train.rounds=1

The hooks are the contract of :class:`fedcore.tasks.algorithm.Algorithm`: ``spec`` declares
what a client sends (shapes, kinds, public bounds, weights), ``client`` computes it from the
client's own data, ``server`` turns the sums into the next state.

Weights: without DP each class row is weighted by the client's count of that class, so the
result is the centroid of the pooled data. Under client-level DP every client weighs one in
all (its class fractions), as fedcore does for model updates: a client's whole contribution
is then bounded, which is what the clip norm and the noise are calibrated to.
"""

from __future__ import annotations

import numpy as np

from fedcore.config import RunConfig
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks import ClientData, RoundContext
from fedcore.tasks.algorithm import Algorithm
from fedcore.tasks.classification import load_federated

MAX_COUNT = 10_000  # public bound on a client's examples of one class


def _shape(state) -> tuple[int, int]:
    return state["centroids"].shape


def spec(cfg: RunConfig, state) -> Spec:
    classes, features = _shape(state)
    if cfg.privacy.dp == "off":  # exact pooled centroids: weight = the class counts
        weight = ArraySpec((classes,), INTEGER, MAX_COUNT)
    else:  # each client weighs one in all: its class fractions
        weight = ArraySpec((classes,), bound=1.0)
    return Spec.of(
        {
            # features lie in [0, 1] (fedcore's image datasets are scaled so)
            "means": ArraySpec((classes, features), bound=1.0, weight="weights"),
            "weights": weight,
        }
    )


def init(cfg: RunConfig, data, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"centroids": np.zeros((data.num_classes, data.num_features))}


def client(state, data: ClientData, context: RoundContext, rng: np.random.Generator):
    """Per class: the mean of this client's examples and their count (or fraction)."""
    classes, features = _shape(state)
    x = data.x_train.numpy().astype(np.float64)
    y = data.y_train.numpy()
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    sums = np.zeros((classes, features))
    np.add.at(sums, y, x)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    weights = counts if context.cfg.privacy.dp == "off" else counts / max(counts.sum(), 1.0)
    return {"means": means, "weights": weights}, {"examples": float(len(y))}


def server(state, summed: Summed, cfg: RunConfig):
    """The weighted mean per class; a class nobody holds (or, under DP, whose noised
    weight is not positive) keeps its centroid."""
    means = summed.mean("means")
    empty = np.isnan(means).any(axis=1)
    centroids = np.where(empty[:, None], state["centroids"], means)
    return {"centroids": centroids}, {"empty-classes": float(empty.sum())}


def evaluate(state, x, y, cfg: RunConfig) -> dict[str, float]:
    """Accuracy of the nearest centroid (squared Euclidean distance)."""
    x = np.asarray(x, np.float64)
    c = state["centroids"]
    distances = (x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None, :]
    return {"accuracy": float((distances.argmin(1) == np.asarray(y)).mean())}


ALGORITHM = Algorithm(
    name="nearest-centroid",
    load_data=lambda cfg: load_federated(cfg.data, cfg.seed),
    init=init,
    spec=spec,
    client=client,
    server=server,
    evaluate=evaluate,
)
