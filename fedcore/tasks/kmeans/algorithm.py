"""Federated k-means (task ``kmeans``) on typed statistics.

Round 1 seeds the centroids (:mod:`.seeding`, ``kmeans.init``). Every later round is one
step of Lloyd's algorithm: each client assigns its points to the nearest centroid and sends,
per cluster, the mean of its points weighted by their (integer) count and their mean
squared distance, also weighted by the count; the sums are then exactly the pooled
per-cluster sums, counts and costs, which is all the centroid update needs. Under secure
aggregation the server learns those totals only; under client-level DP (``privacy.dp =
"client"``, ``"distributed"``, ``"local"``) the shared layers clip each client's vector and
noise the sums, and the server's step is post-processing of the noised sums (FedDP-KMeans,
Scott et al. 2025, does the same on sums and counts). With ``kmeans.batch-size`` each client
draws that many of its points per round and the server takes mini-batch k-means' step.

The data are a classification dataset's features (``data.dataset``: iris, digits, mnist,
femnist, or your own files); labels are used only to score the clustering on the server's
held-out set (homogeneity, completeness, ARI, NMI) beside its cost.
"""

from __future__ import annotations

import numpy as np

from fedcore import seeding
from fedcore.config import CLIENT_LEVEL_DP, ConfigError, RunConfig
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks import classification
from fedcore.tasks.algorithm import Algorithm, RoundContext, State
from fedcore.tasks.base import ClientData
from fedcore.tasks.kmeans import lloyd
from fedcore.tasks.kmeans.options import KMeansOptions
from fedcore.tasks.kmeans.seeding import (
    KFED,
    KMEANS_PP,
    RANDOM,
    global_seeds,
    local_seeds,
    moment_seeds,
)

CENTROIDS, SEEDED = "centroids", "seeded"
SEEN = "server/seen"  # mini-batch: what each centroid has been assigned so far (server only)
CONVERGED = "server/converged"  # 1 once a Lloyd step left every centroid where it was
NOISE_FLOOR = 3.0  # under DP, a noised count at most this many noise stds moves no centroid


def _is_seeded(state: State) -> bool:
    return bool(np.asarray(state[SEEDED]))


def _flat(x, cfg: RunConfig) -> np.ndarray:
    """Points as float64 rows (an image's pixels flattened), clipped to the feature bound."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    return np.clip(x, -cfg.kmeans.bound, cfg.kmeans.bound)


def _cost_scale(cfg: RunConfig, d: int) -> float:
    """The largest squared distance of two points in ``[-bound, bound]^d``: a client sends
    its mean costs divided by it (each then within 1) and the server multiplies back."""
    return d * (2 * cfg.kmeans.bound) ** 2


def init(cfg: RunConfig, data, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Zero centroids, not yet seeded (round 1 seeds them)."""
    k, d = cfg.kmeans.k, data.num_features
    state = {CENTROIDS: np.zeros((k, d)), SEEDED: np.array(0.0), CONVERGED: np.array(0.0)}
    if cfg.kmeans.batch_size:
        state[SEEN] = np.zeros(k)
    return state


def _dp(cfg: RunConfig) -> bool:
    """Whether the sums are noised: client-level DP or record-level DP (``record``)."""
    return cfg.privacy.dp in CLIENT_LEVEL_DP or cfg.privacy.dp == "record"


def record_sensitivity(cfg: RunConfig, state: State) -> tuple[float, float]:
    """Record-level DP (``privacy.dp = "record"``): what one point (within the bound ``b``
    in each of ``d`` features) moves the summed wire vector by, in L1 and L2. Seeding: the
    feature sums, the squares and the count; Lloyd: one cluster's sum, its cost (over the
    cost scale: at most 1) and its count."""
    b, d = cfg.kmeans.bound, np.shape(state[CENTROIDS])[1]
    if _is_seeded(state):
        return d * b + 2.0, float(np.sqrt(d * b * b + 2.0))
    return d * b + d * b * b + 1.0, float(np.sqrt(d * b * b + d * b**4 + 1.0))


def count_noise(cfg: RunConfig, state: State, clients: int) -> float:
    """The standard deviation of the DP noise on a summed count (0 without DP), from the
    run's plan: what tells a noised count from nothing."""
    from privacy.plan import dp_plan, local_noise, record_noise_std  # (DP runs only)

    p = cfg.privacy
    if not _dp(cfg):
        return 0.0
    if p.dp == "record":
        return record_noise_std(cfg, *record_sensitivity(cfg, state))
    if p.dp == "local":  # every client noised its own vector
        return local_noise(cfg) * p.clip_norm * max(clients, 1) ** 0.5
    plan = dp_plan(cfg)
    if p.dp == "distributed":
        return plan.realised_noise(clients) * p.clip_norm
    return plan.noise_multiplier * p.clip_norm


def _sums(shape: tuple[int, ...], bound: float, count: str, cfg: RunConfig) -> ArraySpec:
    """A per-cluster sum of values within ``bound``, as the wire carries it: without DP its
    count-weighted mean (the encoding's range stays ``bound``, the counts are exact, and a
    mean beyond the bound at its count is refused); under DP the sum itself, on the
    counts' scale (bound: ``secagg.max-weight`` values), so that clipping the whole vector
    (client-level DP) does not spend its norm on the counts and a record moves it by at
    most ``bound`` (record-level)."""
    if not _dp(cfg):
        return ArraySpec(shape, bound=bound, weight=count)
    return ArraySpec(shape, bound=bound * cfg.secagg.max_weight)


def _sent(sums: np.ndarray, counts: np.ndarray, cfg: RunConfig) -> np.ndarray:
    """``sums`` as :func:`_sums` declares them: divided by their counts (zero where none)
    where they travel weighted, as they are otherwise."""
    if _dp(cfg):
        return sums
    counts = counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim))
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def spec(cfg: RunConfig, state: State) -> Spec:
    """Round 1: the seeding's statistics; then, per cluster, the sum of the points and of
    their squared distances (over :func:`_cost_scale`, so within 1 each), and the count
    (exact under secure aggregation), as :func:`_sums` puts sums on the wire."""
    o = cfg.kmeans
    k, d = np.shape(state[CENTROIDS])
    counts = ArraySpec((k,), INTEGER, cfg.secagg.max_weight)
    if _is_seeded(state):
        return Spec.of(
            {
                "sums": _sums((k, d), o.bound, "counts", cfg),
                "costs": _sums((k,), 1.0, "counts", cfg),
                "counts": counts,
            }
        )
    if o.init == RANDOM:  # the pooled mean and second moment of every feature
        return Spec.of(
            {
                "sum": _sums((d,), o.bound, "points", cfg),
                "square": _sums((d,), o.bound**2, "points", cfg),
                "points": ArraySpec((), INTEGER, cfg.secagg.max_weight),
            }
        )
    clients = cfg.data.num_clients  # each client's candidates in a block of its own
    return Spec.of(
        {
            "seeds": _sums((clients, k, d), o.bound, "sizes", cfg),
            "sizes": ArraySpec((clients, k), INTEGER, cfg.secagg.max_weight),
        }
    )


def client(state: State, data: ClientData, context: RoundContext, rng: np.random.Generator):
    """The client's seeding statistics (round 1) or per-cluster sums, costs and counts, and
    no metric of its own."""
    cfg, o = context.cfg, context.cfg.kmeans
    x = _flat(data.x_train, cfg)
    centroids = np.asarray(state[CENTROIDS], np.float64)
    k, d = centroids.shape
    if x.shape[1] != d:
        raise ValueError(f"this client's points have {x.shape[1]} features, the centroids {d}")
    if len(x) > cfg.secagg.max_weight:
        raise ValueError(
            f"this client holds {len(x)} points, more than secagg.max-weight = "
            f"{cfg.secagg.max_weight:g}, the public bound on a count; raise it"
        )
    if not _is_seeded(state):
        return _seeding_statistics(x, k, context, rng), {}
    if o.batch_size and o.batch_size < len(x):  # mini-batch: from the client's own generator
        x = x[rng.choice(len(x), o.batch_size, replace=False)]
    s = lloyd.cluster_stats(x, centroids)
    sums, costs = _sent(s.sums, s.counts, cfg), _sent(s.costs / _cost_scale(cfg, d), s.counts, cfg)
    return (
        {"sums": sums, "costs": costs, "counts": s.counts},
        {},  # (its size is the reply's num-examples, in the clear unless clear-metrics off)
    )


def _seeding_statistics(x: np.ndarray, k: int, context: RoundContext, rng) -> dict:
    cfg = context.cfg
    if cfg.kmeans.init == RANDOM:
        n = np.array(float(len(x)))
        return {
            "sum": _sent(x.sum(axis=0), n, cfg),
            "square": _sent((x**2).sum(axis=0), n, cfg),
            "points": n,
        }
    clients, pid = cfg.data.num_clients, context.partition_id
    if not 0 <= pid < clients:
        raise ValueError(f"client id {pid} is not below data.num-clients = {clients}")
    centres, sizes = local_seeds(x, k, cfg.kmeans.init, rng)
    seeds, weights = np.zeros((clients, k, x.shape[1])), np.zeros((clients, k))
    seeds[pid], weights[pid] = centres * sizes[:, None], sizes  # each centre's sum
    return {"seeds": _sent(seeds, weights, cfg), "sizes": weights}


def server(state: State, summed: Summed, cfg: RunConfig):
    """Seed the centroids (round 1), then one Lloyd (or mini-batch) step on the sums."""
    o = cfg.kmeans
    centroids = np.asarray(state[CENTROIDS], np.float64)
    k, d = centroids.shape
    rng = seeding.numpy_rng(cfg.seed, seeding.MODEL_INIT)  # the server's seeding draws
    new = dict(state)
    if not _is_seeded(state):
        if o.init == RANDOM:
            n = float(summed["points"])
            if not n > 0:  # nobody holds a point (or, under DP, the noised count says so)
                return dict(state), {"skipped": 1.0}
            mean = summed["sum"] / n
            variance = summed["square"] / n - mean**2
            new[CENTROIDS] = moment_seeds(mean, variance, k, o.bound, rng)
        else:
            candidates = summed["seeds"].reshape(-1, d) / np.maximum(
                summed["sizes"].reshape(-1, 1), 1e-300
            )
            weights = summed["sizes"].reshape(-1)
            if not (weights > 0).any():
                return dict(state), {"skipped": 1.0}
            new[CENTROIDS] = np.clip(
                global_seeds(candidates, weights, k, o.init, rng), -o.bound, o.bound
            )
        new[SEEDED] = np.array(1.0)
        return new, {"seeded": 1.0}
    sums, counts = summed["sums"], summed["counts"]
    # Under DP a cluster whose noised count is within NOISE_FLOOR standard deviations of the
    # noise may hold no point at all: its noised sum over its noised count would throw the
    # centroid anywhere in the box, so it keeps its place (as an empty cluster does).
    floor = NOISE_FLOOR * count_noise(cfg, state, summed.clients)
    counts = np.where(counts > floor, counts, 0.0)
    if o.batch_size:
        moved, new[SEEN] = lloyd.minibatch_step(centroids, state[SEEN], sums, counts)
    else:
        moved = lloyd.lloyd_step(centroids, sums, counts)
    new[CENTROIDS] = np.clip(moved, -o.bound, o.bound)  # (only DP noise can push it out)
    # a fixed point of Lloyd's, which the next rounds would only repeat (never declared
    # under DP, where a step that moved nothing may only have met the noise floor)
    fixed = not _dp(cfg) and not o.batch_size and np.array_equal(new[CENTROIDS], centroids)
    new[CONVERGED] = np.array(float(fixed))
    return new, {
        # the cost of the centroids this round started from, over the cohort's points
        "inertia": max(float(summed["costs"].sum()), 0.0) * _cost_scale(cfg, d),  # (noised)
        "points": float(counts.sum()),
        "empty-clusters": float((counts <= 0).sum()),
    }


def evaluate(state: State, x, y, cfg: RunConfig) -> dict[str, float]:
    """The clustering of the server's held-out points: its cost, and against the labels
    homogeneity, completeness, the adjusted Rand index and normalized mutual information."""
    from sklearn import metrics

    x = _flat(x, cfg)
    labels, distances = lloyd.assign(x, state[CENTROIDS])
    y = np.asarray(y)
    return {
        "inertia": float(distances.sum()),
        "homogeneity": float(metrics.homogeneity_score(y, labels)),
        "completeness": float(metrics.completeness_score(y, labels)),
        "ari": float(metrics.adjusted_rand_score(y, labels)),
        "nmi": float(metrics.normalized_mutual_info_score(y, labels)),
    }


def check_config(cfg: RunConfig) -> None:
    """Labelled-example data (the features are clustered), and a seeding whose per-client
    blocks fit (``kfed``, ``kmeans++``: num-clients x k x features entries)."""
    classification.check_config(cfg)
    o = cfg.kmeans
    if o.init in (KFED, KMEANS_PP) and _dp(cfg):
        raise ConfigError(
            f"kmeans.init = {o.init!r} under privacy.dp = {cfg.privacy.dp!r}: each client's "
            "seeding block would carry one client's centres under the whole noise; use "
            "kmeans.init = 'random' (seeds from the noised pooled mean and variance)"
        )
    if cfg.privacy.dp == "record" and cfg.privacy.mechanism == "discrete-gaussian":
        raise ConfigError(
            "privacy.mechanism = 'discrete-gaussian' adds integer noise, which hides nothing "
            "of k-means' real-valued sums; use 'gaussian' or 'laplace'"
        )
    if o.batch_size and cfg.privacy.dp == "record":
        raise ConfigError(
            "kmeans.batch-size with privacy.dp = 'record': a client's batch is drawn from a "
            "seeded generator, so one record can change which points it holds, more than the "
            "one point the sensitivity covers; use kmeans.batch-size = 0"
        )
    if o.init in (KFED, KMEANS_PP) and cfg.data.num_clients * o.k > 1_000_000:
        raise ConfigError(
            f"kmeans.init = {o.init!r} sends a block per client ({cfg.data.num_clients} x "
            f"{o.k} centres); use kmeans.init = 'random' at this scale"
        )


TASK = Algorithm(
    name="kmeans",
    load_data=lambda cfg: classification.load_federated(cfg.data, cfg.seed),
    init=init,
    spec=spec,
    client=client,
    server=server,
    evaluate=evaluate,
    check_config=check_config,
    node_files=True,
    load_server=classification.load_server_data,
    server_only=("server/",),
    sections={"kmeans": KMeansOptions},
    record_sensitivity=record_sensitivity,
    finished=lambda state: bool(state.get(CONVERGED, 0)),
)
