"""The Planetoid loader on the shared Cora files, and the restricted unpickler."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.planetoid import NAMES, PARTS, SHA256, load_planetoid, restricted_load


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


def _write_fake_planetoid(folder, name):
    """Well-formed Planetoid files for ``name`` that are not the published ones: 4 nodes,
    1 training node, validation empty, test nodes 2 and 3."""
    folder.mkdir(parents=True, exist_ok=True)
    one_hot = np.eye(2, dtype=np.float32)
    parts = {
        "x": sp.csr_matrix(np.ones((1, 3), np.float32)),
        "y": one_hot[:1],
        "allx": sp.csr_matrix(np.ones((2, 3), np.float32)),
        "ally": one_hot[[0, 1]],
        "tx": sp.csr_matrix(np.ones((2, 3), np.float32)),
        "ty": one_hot[[1, 0]],
        "graph": {0: [1], 1: [0, 2], 2: [1, 3], 3: [2]},
    }
    for part, value in parts.items():
        (folder / f"ind.{name}.{part}").write_bytes(pickle.dumps(value, protocol=4))
    (folder / f"ind.{name}.test.index").write_text("2\n3\n")


@pytest.mark.parametrize("name", ["citeseer", "pubmed"])
def test_substituted_files_are_refused_before_they_are_read(tmp_path, name):
    _write_fake_planetoid(tmp_path / "planetoid", name)
    with pytest.raises(DatasetError, match=rf"ind\.{name}\.\S+ is corrupt or incomplete: sha256"):
        load_planetoid(name, tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_every_file_of_every_graph_has_a_pinned_sha256(name):
    assert set(SHA256[name]) == {f"ind.{name}.{part}" for part in PARTS}
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in SHA256[name].values())


def test_a_graph_without_pinned_sha256_is_refused_not_read(tmp_path, monkeypatch):
    monkeypatch.delitem(SHA256, "citeseer")
    _write_fake_planetoid(tmp_path / "planetoid", "citeseer")
    with pytest.raises(DatasetError, match="no pinned sha256 for citeseer"):
        load_planetoid("citeseer", tmp_path)


def test_a_graph_without_pinned_sha256_is_not_downloaded_unverified(tmp_path, monkeypatch):
    monkeypatch.delitem(SHA256, "citeseer")
    with pytest.raises(DatasetError, match="no pinned sha256 for citeseer"):
        load_planetoid("citeseer", tmp_path, download=True)
