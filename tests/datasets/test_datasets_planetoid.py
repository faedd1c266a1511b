"""The Planetoid loader on the shared Cora files, and the restricted unpickler."""

import pickle

import numpy as np
import pytest

from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid, restricted_load


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora", resolve_data_dir(None))


def test_cora_has_the_published_counts(cora):
    assert cora.x.shape == (2708, 1433) and cora.num_classes == 7
    assert cora.edges.shape == (2, 5278)
    assert np.all(cora.edges[0] < cora.edges[1])  # each undirected edge once, no self loops
    assert (len(cora.train), len(cora.val), len(cora.test)) == (140, 500, 1000)
    assert set(np.unique(cora.x)) <= {0.0, 1.0}


def test_splits_are_disjoint(cora):
    assert not set(cora.train) & set(cora.val)
    assert not (set(cora.train) | set(cora.val)) & set(cora.test)


class _Exploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_a_malicious_pickle_is_refused_before_it_runs():
    payload = pickle.dumps(_Exploit(), protocol=2)
    with pytest.raises(DatasetError, match=r"refusing to unpickle (__builtin__|builtins)\.eval"):
        restricted_load(payload)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError, match="download=True"):
        load_planetoid("cora", tmp_path)


def test_unpinned_graph_is_not_downloaded_unverified(tmp_path):
    with pytest.raises(DatasetError, match="no pinned sha256 for citeseer"):
        load_planetoid("citeseer", tmp_path, download=True)
