"""Tests for fedcore.partition: exact cover, reproducibility, skew, and a brute-force report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore import partition as P

FAST = settings(max_examples=60, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _assert_exact_cover(parts: list[np.ndarray], num_samples: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert part.ndim == 1
        assert np.all(np.diff(part) > 0), "each client's indices must be strictly ascending"
    counts = np.bincount(np.concatenate(parts), minlength=num_samples)
    assert counts.shape == (num_samples,)
    assert np.all(counts == 1), "every index must appear in exactly one client"


@st.composite
def labelled(draw, max_samples: int = 300, max_classes: int = 10):
    """(labels, num_clients, seed) with num_clients <= len(labels)."""
    num_samples = draw(st.integers(1, max_samples))
    num_classes = draw(st.integers(1, max_classes))
    seed = draw(SEEDS)
    labels = _rng(seed).integers(0, num_classes, num_samples)
    num_clients = draw(st.integers(1, min(num_samples, 20)))
    return labels, num_clients, seed


def _skewed_labels(num_samples: int = 2000, num_classes: int = 10) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), num_samples // num_classes)
    return _rng(12345).permutation(labels)


# --- exact cover -------------------------------------------------------------------------


@FAST
@given(num_samples=st.integers(1, 500), data=st.data(), seed=SEEDS)
def test_iid_covers_every_index_once_with_balanced_sizes(num_samples, data, seed):
    num_clients = data.draw(st.integers(1, num_samples))
    parts = P.iid(num_samples, num_clients, _rng(seed))
    _assert_exact_cover(parts, num_samples, num_clients)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(case=labelled(), alpha=st.floats(0.01, 1000.0), min_size=st.sampled_from([0, 1]))
def test_dirichlet_covers_every_index_once(case, alpha, min_size):
    labels, num_clients, seed = case
    try:
        parts = P.dirichlet(labels, num_clients, alpha, _rng(seed), min_size=min_size)
    except ValueError as err:
        # Only reachable when min_size=1 with tiny data and strong skew; must say why.
        assert min_size == 1 and "min_size" in str(err)
        return
    _assert_exact_cover(parts, labels.size, num_clients)
    assert min(len(p) for p in parts) >= min_size


@FAST
@given(case=labelled(), data=st.data())
def test_shards_covers_every_index_once(case, data):
    labels, num_clients, seed = case
    shards_per_client = data.draw(st.integers(1, labels.size // num_clients))
    parts = P.shards(labels, num_clients, shards_per_client, _rng(seed))
    _assert_exact_cover(parts, labels.size, num_clients)


@FAST
@given(num_samples=st.integers(1, 500), data=st.data(), alpha=st.floats(0.01, 100.0), seed=SEEDS)
def test_quantity_skew_covers_every_index_once_and_honours_min_size(num_samples, data, alpha, seed):
    num_clients = data.draw(st.integers(1, num_samples))
    min_size = data.draw(st.integers(0, num_samples // num_clients))
    parts = P.quantity_skew(num_samples, num_clients, alpha, _rng(seed), min_size=min_size)
    _assert_exact_cover(parts, num_samples, num_clients)
    assert min(len(p) for p in parts) >= min_size


@FAST
@given(num_samples=st.integers(1, 300), num_groups=st.integers(1, 30), data=st.data(), seed=SEEDS)
def test_natural_keeps_every_group_on_exactly_one_client(num_samples, num_groups, data, seed):
    groups = _rng(seed).integers(0, num_groups, num_samples) * 7 + 100  # arbitrary group ids
    unique = np.unique(groups)
    num_clients = data.draw(st.one_of(st.none(), st.integers(1, unique.size)))
    parts = P.natural(groups, num_clients)
    expected_clients = unique.size if num_clients is None else num_clients
    _assert_exact_cover(parts, num_samples, expected_clients)
    owner = np.empty(num_samples, dtype=np.int64)
    for client, part in enumerate(parts):
        owner[part] = client
    for position, group in enumerate(unique):
        assert set(owner[groups == group].tolist()) == {position % expected_clients}


# --- reproducibility ---------------------------------------------------------------------

LABELS_500 = _rng(7).integers(0, 10, 500)
RUNS = {
    "iid": lambda rng: P.iid(500, 10, rng),
    "dirichlet": lambda rng: P.dirichlet(LABELS_500, 10, 0.5, rng),
    "shards": lambda rng: P.shards(LABELS_500, 10, 2, rng),
    "quantity": lambda rng: P.quantity_skew(500, 10, 0.5, rng),
    "natural": lambda rng: P.natural(LABELS_500, 4),
}


def test_every_named_partitioner_has_a_reproducibility_case():
    assert tuple(RUNS) == P.PARTITIONERS


@pytest.mark.parametrize("name", P.PARTITIONERS)
def test_same_seed_gives_identical_partition(name):
    first, second = RUNS[name](_rng(3)), RUNS[name](_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", P.PARTITIONERS)
def test_partitioners_leave_the_global_rng_untouched(name):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    RUNS[name](_rng(3))
    assert np.array_equal(np.random.get_state()[1], before)


def test_dirichlet_different_seeds_give_different_partitions():
    labels = _skewed_labels()
    partitions = [P.dirichlet(labels, 10, 0.5, _rng(seed)) for seed in range(8)]
    for i in range(len(partitions)):
        for j in range(i + 1, len(partitions)):
            same = all(
                np.array_equal(a, b) for a, b in zip(partitions[i], partitions[j], strict=True)
            )
            assert not same, f"seeds {i} and {j} gave the same partition"


# --- skew --------------------------------------------------------------------------------


def _dirichlet_skew(alpha: float) -> float:
    labels = _skewed_labels()
    parts = P.dirichlet(labels, 10, alpha, _rng(0))
    return P.partition_report(parts, labels, 10)["label_skew"]


def test_dirichlet_large_alpha_approaches_global_label_distribution():
    assert _dirichlet_skew(1e5) < 0.03


def test_dirichlet_smaller_alpha_is_more_skewed():
    skews = [_dirichlet_skew(alpha) for alpha in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[2] > 0.5


def test_dirichlet_honours_a_large_min_size():
    parts = P.dirichlet(_skewed_labels(), 10, 0.5, _rng(0), min_size=100)
    assert min(len(p) for p in parts) >= 100


def test_dirichlet_gives_up_with_a_clear_error_when_min_size_is_unreachable():
    with pytest.raises(ValueError, match="min_size"):
        P.dirichlet(_skewed_labels(), 10, 0.01, _rng(0), min_size=200, max_tries=5)


@st.composite
def equal_class_shards(draw):
    """Labels whose classes are equal multiples of the shard size, and a shard deal."""
    num_clients = draw(st.integers(1, 10))
    shards_per_client = draw(st.integers(1, 5))
    num_shards = num_clients * shards_per_client
    num_classes = draw(
        st.sampled_from([d for d in range(1, num_shards + 1) if num_shards % d == 0])
    )
    shard_size = draw(st.integers(1, 8))
    labels = np.repeat(np.arange(num_classes), num_shards // num_classes * shard_size)
    return labels, num_clients, shards_per_client, draw(SEEDS)


@FAST
@given(case=equal_class_shards())
def test_shards_give_each_client_at_most_shards_per_client_labels(case):
    labels, num_clients, shards_per_client, seed = case
    labels = _rng(seed).permutation(labels)
    parts = P.shards(labels, num_clients, shards_per_client, _rng(seed + 1))
    _assert_exact_cover(parts, labels.size, num_clients)
    for part in parts:
        assert np.unique(labels[part]).size <= shards_per_client


# --- bad arguments -----------------------------------------------------------------------

LABELS_20 = np.arange(20) % 4
BAD_CALLS = [
    ("num_samples", lambda: P.iid(0, 1, _rng(0))),
    ("num_clients", lambda: P.iid(10, 0, _rng(0))),
    ("num_clients", lambda: P.iid(5, 6, _rng(0))),
    ("num_clients", lambda: P.iid(10, 2.5, _rng(0))),
    ("num_clients", lambda: P.dirichlet(LABELS_20, 0, 0.5, _rng(0))),
    ("num_clients", lambda: P.dirichlet(LABELS_20, 21, 0.5, _rng(0), min_size=0)),
    ("alpha", lambda: P.dirichlet(LABELS_20, 2, 0.0, _rng(0))),
    ("alpha", lambda: P.dirichlet(LABELS_20, 2, -1.0, _rng(0))),
    ("alpha", lambda: P.dirichlet(LABELS_20, 2, float("nan"), _rng(0))),
    ("alpha", lambda: P.dirichlet(LABELS_20, 2, float("inf"), _rng(0))),
    ("min_size", lambda: P.dirichlet(LABELS_20, 2, 0.5, _rng(0), min_size=-1)),
    ("min_size", lambda: P.dirichlet(LABELS_20, 2, 0.5, _rng(0), min_size=11)),
    ("max_tries", lambda: P.dirichlet(LABELS_20, 2, 0.5, _rng(0), max_tries=0)),
    ("labels", lambda: P.dirichlet(LABELS_20.reshape(4, 5), 2, 0.5, _rng(0))),
    ("labels", lambda: P.dirichlet(np.array([], dtype=int), 1, 0.5, _rng(0))),
    ("num_clients", lambda: P.shards(LABELS_20, 0, 2, _rng(0))),
    ("shards_per_client", lambda: P.shards(LABELS_20, 2, 0, _rng(0))),
    ("shards_per_client", lambda: P.shards(LABELS_20, 5, 5, _rng(0))),
    ("alpha", lambda: P.quantity_skew(20, 2, 0.0, _rng(0))),
    ("min_size", lambda: P.quantity_skew(20, 3, 1.0, _rng(0), min_size=7)),
    ("num_clients", lambda: P.quantity_skew(20, 21, 1.0, _rng(0))),
    ("num_clients", lambda: P.natural(LABELS_20, 5)),
    ("num_clients", lambda: P.natural(LABELS_20, 0)),
    ("groups", lambda: P.natural(np.array([]))),
    ("num_classes", lambda: P.label_histograms([np.arange(20)], LABELS_20, 0)),
    ("labels", lambda: P.label_histograms([np.arange(20)], LABELS_20, 3)),
    ("parts", lambda: P.partition_report([], LABELS_20, 4)),
]


@pytest.mark.parametrize(("param", "call"), BAD_CALLS)
def test_bad_arguments_raise_value_error_naming_the_parameter(param, call):
    with pytest.raises(ValueError, match=param):
        call()


# --- report ------------------------------------------------------------------------------


@FAST
@given(case=labelled(), alpha=st.floats(0.05, 10.0))
def test_report_agrees_with_brute_force_recount(case, alpha):
    labels, num_clients, seed = case
    num_classes = int(labels.max()) + 1
    parts = P.dirichlet(labels, num_clients, alpha, _rng(seed), min_size=0)
    report = P.partition_report(parts, labels, num_classes)
    assert json.loads(json.dumps(report)) == report

    hist = [[0] * num_classes for _ in parts]
    for client, part in enumerate(parts):
        for index in part:
            hist[client][int(labels[index])] += 1
    sizes = [sum(row) for row in hist]
    total = sum(sizes)
    mean = total / len(sizes)
    global_p = [sum(row[c] for row in hist) / total for c in range(num_classes)]
    tvs = [
        0.5 * sum(abs(row[c] / size - global_p[c]) for c in range(num_classes))
        for row, size in zip(hist, sizes, strict=True)
        if size > 0
    ]

    assert report["num_clients"] == num_clients
    assert report["num_samples"] == labels.size == total
    assert report["sizes"] == sizes
    assert report["label_histograms"] == hist
    assert report["size_stats"]["min"] == min(sizes)
    assert report["size_stats"]["max"] == max(sizes)
    assert report["size_stats"]["mean"] == pytest.approx(mean)
    std = (sum((s - mean) ** 2 for s in sizes) / len(sizes)) ** 0.5
    assert report["size_stats"]["std"] == pytest.approx(std)
    classes = [sum(1 for count in row if count > 0) for row in hist]
    assert report["mean_classes_per_client"] == pytest.approx(sum(classes) / len(classes))
    assert report["label_skew"] == pytest.approx(sum(tvs) / len(tvs))
    assert np.array_equal(P.label_histograms(parts, labels, num_classes), np.array(hist))
    assert P.label_histograms(parts, labels, num_classes).dtype == np.int64
