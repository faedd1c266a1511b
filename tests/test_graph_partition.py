"""Graph partitioners: every node in exactly one client, reproducible, with a report."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.graph_partition import graph_report, owners, split_nodes


def _random_graph(n, m, seed):
    rng = np.random.default_rng(seed)
    pairs = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(m)}
    return np.array(sorted(pairs)).T.reshape(2, -1), rng.integers(0, 3, n)


@settings(max_examples=30, deadline=None)
@given(
    method=st.sampled_from(["louvain", "dirichlet", "iid"]),
    n=st.integers(30, 120),
    k=st.integers(2, 5),
    seed=st.integers(0, 1000),
)
def test_every_node_is_in_exactly_one_client(method, n, k, seed):
    edges, labels = _random_graph(n, 2 * n, seed)
    try:
        parts = split_nodes(method, labels, edges, k, 1.0, np.random.default_rng(seed))
    except ValueError:
        return  # e.g. fewer Louvain communities than clients: refused, never a bad split
    owner = owners(parts, n)
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert (owner >= 0).all()


def test_same_seed_same_split():
    edges, labels = _random_graph(80, 200, 1)
    a = split_nodes("louvain", labels, edges, 3, 1.0, np.random.default_rng(5))
    b = split_nodes("louvain", labels, edges, 3, 1.0, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_report_counts_cut_edges():
    edges = np.array([[0, 1, 2], [1, 2, 3]])  # a path 0-1-2-3
    report = graph_report([np.array([0, 1]), np.array([2, 3])], np.array([0, 0, 1, 1]), edges, 2)
    assert report["cut_edges"] == 1 and report["cut_edge_fraction"] == pytest.approx(1 / 3)
    assert report["internal_edges"] == [1, 1] and report["label_histograms"] == [[2, 0], [0, 2]]


def test_overlapping_parts_are_refused():
    with pytest.raises(ValueError, match="two clients"):
        owners([np.array([0, 1]), np.array([1, 2])], 3)
