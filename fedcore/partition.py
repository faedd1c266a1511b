"""Data partitioners for federated simulation, and a report on what they produced.

Every partitioner is a pure function of its arguments: randomness comes only from the
``numpy.random.Generator`` passed in, so a (seed, config) pair always names one partition.
Each returns ``list[np.ndarray]``: one int64 index array per client, sorted ascending, such
that every index ``0..N-1`` appears in exactly one client (an exact cover; clients may be
empty only where ``min_size=0`` allows it).
"""

from __future__ import annotations

import numpy as np

PARTITIONERS = ("iid", "dirichlet", "shards", "quantity", "natural")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return int(value)


def _check_alpha(alpha: float) -> float:
    real = isinstance(alpha, int | float | np.integer | np.floating) and not isinstance(alpha, bool)
    if not real or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0; got {alpha!r}")
    return float(alpha)


def _check_1d(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {values.shape}")
    return values


def _group(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn a per-sample client id into one sorted index array per client."""
    # A stable sort of the owner ids keeps each client's indices in ascending order.
    order = np.argsort(owner, kind="stable").astype(np.int64)
    counts = np.bincount(owner, minlength=num_clients)
    return np.split(order, np.cumsum(counts)[:-1])


def _cuts(proportions: np.ndarray, total: int) -> np.ndarray:
    """Interior cut points that split ``total`` items by ``proportions`` (floor of the cumsum)."""
    return np.floor(np.cumsum(proportions)[:-1] * total).astype(np.int64).clip(0, total)


def iid(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle the indices and split them as evenly as possible (sizes differ by at most 1).

    The IID baseline: every client sees the global label distribution, up to sampling noise.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    num_clients = _check_int("num_clients", num_clients, 1, num_samples)
    owner = np.empty(num_samples, dtype=np.int64)
    owner[rng.permutation(num_samples)] = np.arange(num_samples) % num_clients
    return _group(owner, num_clients)


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    *,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed partition: each class is split across clients by Dirichlet proportions.

    Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
    Federated Visual Classification" (arXiv:1909.06335), as in the common FL benchmark code
    (e.g. NIID-Bench, Li et al. 2022): for each class, draw ``p ~ Dir(alpha * 1_K)`` over the
    K clients and cut that class's shuffled indices at ``floor(cumsum(p) * n_class)``.
    (We omit NIID-Bench's extra rebalancing of already-large clients, to stay with Hsu et al.)

    ``alpha`` sets the skew: ``alpha -> 0`` gives each client few classes (one in the limit),
    ``alpha -> inf`` gives every client the global label distribution; 0.1 / 0.5 / 1.0 are the
    usual "strong / moderate / mild" settings.

    Draws are repeated, the whole partition at a time, until every client holds at least
    ``min_size`` samples; after ``max_tries`` failed draws a ValueError says so, rather than
    silently bending the distribution.
    """
    labels = _check_1d("labels", labels)
    num_samples = labels.size
    num_clients = _check_int("num_clients", num_clients, 1, num_samples)
    alpha = _check_alpha(alpha)
    min_size = _check_int("min_size", min_size, 0, num_samples // num_clients)
    max_tries = _check_int("max_tries", max_tries, 1)

    _, class_of = np.unique(labels, return_inverse=True)
    by_class = np.argsort(class_of, kind="stable")
    members = np.split(by_class, np.cumsum(np.bincount(class_of))[:-1])
    owner = np.empty(num_samples, dtype=np.int64)
    for _ in range(max_tries):
        for idx in members:
            cuts = _cuts(rng.dirichlet(np.full(num_clients, alpha)), idx.size)
            # Client j receives the shuffled class positions in [cuts[j-1], cuts[j]).
            owner[rng.permutation(idx)] = np.searchsorted(cuts, np.arange(idx.size), "right")
        if np.bincount(owner, minlength=num_clients).min() >= min_size:
            return _group(owner, num_clients)
    raise ValueError(
        f"dirichlet: no draw in max_tries={max_tries} gave every client min_size={min_size} "
        f"samples (alpha={alpha}, num_clients={num_clients}, {num_samples} samples); "
        "lower min_size or num_clients, or raise alpha or max_tries"
    )


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Pathological non-IID partition: each client gets a few label-sorted shards.

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
    Decentralized Data" (FedAvg), Sec. 3: sort the data by label, cut it into
    ``num_clients * shards_per_client`` shards, deal each client ``shards_per_client`` at
    random. With 2 shards per client most clients see only two labels.

    The sort is stable over a random shuffle, so which samples of a class share a shard is
    random. Shard sizes differ by at most one (``np.array_split``), so every sample is dealt
    even when N is not a multiple of the shard count.
    """
    labels = _check_1d("labels", labels)
    num_samples = labels.size
    num_clients = _check_int("num_clients", num_clients, 1, num_samples)
    shards_per_client = _check_int(
        "shards_per_client", shards_per_client, 1, num_samples // num_clients
    )
    num_shards = num_clients * shards_per_client

    shuffled = rng.permutation(num_samples)
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    base, extra = divmod(num_samples, num_shards)
    shard_sizes = np.full(num_shards, base) + (np.arange(num_shards) < extra)
    client_of_shard = np.empty(num_shards, dtype=np.int64)
    client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    owner = np.empty(num_samples, dtype=np.int64)
    owner[by_label] = np.repeat(client_of_shard, shard_sizes)
    return _group(owner, num_clients)


def quantity_skew(
    num_samples: int,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Quantity-skewed partition: client sizes vary, label distribution stays IID.

    Each client first gets ``min_size`` samples; the rest are split by proportions
    ``p ~ Dir(alpha * 1_K)`` (floor of the cumsum), so sizes follow the Dirichlet up to that
    floor and the guarantee needs no resampling. Small ``alpha`` = a few very large clients,
    large ``alpha`` = near-equal sizes. Which samples go where is a uniform shuffle.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    num_clients = _check_int("num_clients", num_clients, 1, num_samples)
    alpha = _check_alpha(alpha)
    min_size = _check_int("min_size", min_size, 0, num_samples // num_clients)

    rest = num_samples - num_clients * min_size
    cuts = _cuts(rng.dirichlet(np.full(num_clients, alpha)), rest)
    sizes = np.diff(cuts, prepend=0, append=rest) + min_size
    owner = np.empty(num_samples, dtype=np.int64)
    owner[rng.permutation(num_samples)] = np.repeat(np.arange(num_clients), sizes)
    return _group(owner, num_clients)


def natural(groups: np.ndarray, num_clients: int | None = None) -> list[np.ndarray]:
    """Partition along a natural grouping, e.g. the FEMNIST writer or the Shakespeare role.

    By default one client per distinct group id. With ``num_clients`` fewer than the groups,
    the group at position ``i`` of the sorted unique ids goes to client ``i % num_clients``,
    so a group is never split. Deterministic: the data already says who owns what.
    """
    groups = _check_1d("groups", groups)
    _, group_of = np.unique(groups, return_inverse=True)
    num_groups = int(group_of.max()) + 1
    if num_clients is None:
        num_clients = num_groups
    num_clients = _check_int("num_clients", num_clients, 1, num_groups)
    return _group((group_of % num_clients).astype(np.int64), num_clients)


def label_histograms(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-client label counts, shape ``(num_clients, num_classes)``, int64."""
    labels = _check_1d("labels", labels)
    num_classes = _check_int("num_classes", num_classes, 1)
    if len(parts) == 0:
        raise ValueError("parts must hold at least one client; got an empty list")
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= num_classes
    ):
        raise ValueError(f"labels must be integers in [0, num_classes={num_classes})")
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    owner = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    index = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    flat = np.bincount(owner * num_classes + labels[index], minlength=len(parts) * num_classes)
    return flat.reshape(len(parts), num_classes).astype(np.int64)


def partition_report(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """A JSON-serialisable summary of a partition, for logs and scenario reports.

    ``label_skew`` is the mean, over non-empty clients, of the total-variation distance
    ``0.5 * sum_c |p_client(c) - p_global(c)|`` (0 = every client looks like the whole
    dataset, 1 = disjoint supports); ``p_global`` is taken over the samples in ``parts``.
    """
    hist = label_histograms(parts, labels, num_classes)
    sizes = hist.sum(axis=1)
    total = int(sizes.sum())
    nonempty = sizes > 0
    p_client = hist[nonempty] / sizes[nonempty, None]
    p_global = hist.sum(axis=0) / max(total, 1)
    tv = 0.5 * np.abs(p_client - p_global).sum(axis=1)
    return {
        "num_clients": len(parts),
        "num_samples": total,
        "sizes": sizes.tolist(),
        "size_stats": {
            "min": int(sizes.min()),
            "max": int(sizes.max()),
            "mean": float(sizes.mean()),
            "std": float(sizes.std()),
        },
        "label_histograms": hist.tolist(),
        "mean_classes_per_client": float((hist > 0).sum(axis=1).mean()),
        "label_skew": float(tv.mean()) if tv.size else 0.0,
    }
