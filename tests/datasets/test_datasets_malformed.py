"""Malformed data files give the loader's DatasetError, never a TypeError, a MemoryError or a
model trained on garbage (issue 17, finding 10): Planetoid pickles parsed from their bytes
(the pinned sha256 keeps bad files out of ``load_planetoid``; ``parse_planetoid`` is what
reads them), node ``.npz`` files and your own NPZ files."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.arrays import read_labelled
from fedcore.datasets.movielens import load_movielens
from fedcore.datasets.node import load_node_file
from fedcore.datasets.planetoid import PARTS, parse_planetoid, restricted_load


@pytest.fixture(scope="module")
def cora() -> dict[str, bytes]:
    folder = resolve_data_dir(None) / "planetoid"
    if not (folder / "ind.cora.x").is_file():
        pytest.skip("Cora is not in the shared data folder")
    return {part: (folder / f"ind.cora.{part}").read_bytes() for part in PARTS}


def _with(cora: dict[str, bytes], part: str, value: object) -> dict[str, bytes]:
    return cora | {part: value if isinstance(value, bytes) else pickle.dumps(value, protocol=4)}


def _refused(blobs: dict[str, bytes], *words: str) -> str:
    with pytest.raises(DatasetError) as err:
        parse_planetoid("cora", blobs)
    for word in words:
        assert word in str(err.value)
    return str(err.value)


def test_the_real_cora_bytes_parse(cora):
    graph = parse_planetoid("cora", cora)
    assert graph.x.shape == (2708, 1433) and graph.num_classes == 7


@pytest.mark.parametrize("part", ["x", "allx", "ty", "graph"])
def test_a_truncated_pickle_is_a_named_error(cora, part):
    _refused(_with(cora, part, cora[part][: len(cora[part]) // 2]), f"ind.cora.{part}")


def test_a_graph_that_is_a_list_is_refused_not_a_type_error(cora):
    _refused(_with(cora, "graph", [[1, 2], [0]]), "ind.cora.graph", "dict")


def test_a_feature_matrix_of_strings_is_refused(cora):
    _refused(_with(cora, "tx", np.array([["a"] * 1433] * 1000)), "ind.cora.tx")


def test_labels_with_the_wrong_number_of_classes_are_refused(cora):
    ally = restricted_load(cora["ally"])[:, :6]
    _refused(_with(cora, "ally", ally), "ind.cora.ally", "7 columns")


def test_training_labels_that_miss_a_class_are_refused_not_trained_to_accuracy_0(cora):
    y = np.zeros((140, 7), np.int32)
    y[:, 0] = 1
    _refused(_with(cora, "y", y), "ind.cora.y", "7 classes")


def test_unlabelled_test_nodes_are_refused(cora):
    _refused(_with(cora, "ty", np.zeros((1000, 7), np.int32)), "ind.cora.ty", "no node")


def test_parts_that_disagree_on_the_node_count_are_refused(cora):
    tx = restricted_load(cora["tx"])[:999]
    _refused(_with(cora, "tx", tx), "ind.cora.tx", "disagree")


def test_a_sparse_matrix_claiming_a_huge_shape_is_refused_before_it_is_made_dense(cora):
    huge = scipy.sparse.coo_matrix(([1.0], ([10**9 - 1], [0])), shape=(10**9, 1433))
    _refused(_with(cora, "allx", huge), "ind.cora.allx")


def test_a_sparse_matrix_with_indices_out_of_its_shape_is_refused(cora):
    bad = scipy.sparse.eye(1000, 1433, dtype=np.float32, format="csr")
    bad.indices[3] = 10**6
    _refused(_with(cora, "tx", bad), "ind.cora.tx")


@pytest.mark.parametrize(
    "text",
    [b"", b"not a number\n", b"2707\n", b"-1\n" * 1000, b"99999999999\n" * 1000],
    ids=["empty", "text", "one-line", "negative", "huge"],
)
def test_a_malformed_test_index_is_refused(cora, text):
    _refused(_with(cora, "test.index", text), "test.index")


def test_a_test_index_with_a_repeated_node_is_refused(cora):
    ids = np.loadtxt(io.BytesIO(cora["test.index"]), dtype=np.int64)
    ids[1] = ids[0]
    _refused(_with(cora, "test.index", "\n".join(map(str, ids)).encode()), "twice")


# --- npz files: a node's own data, and your own data ---------------------------------------


def _npz(path: Path, compressed: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 4)).astype(np.float32), rng.integers(0, 3, 20)
    save = np.savez_compressed if compressed else np.savez
    save(path, x_train=x, y_train=y, x=x, y=y)
    return path.read_bytes()


def _damaged(tmp_path: Path) -> dict[str, bytes]:
    good = _npz(tmp_path / "good.npz")
    squeezed = _npz(tmp_path / "squeezed.npz", compressed=True)
    method = good.index(b"PK\x01\x02") + 10  # the first member's compression method
    name_length, extra_length = struct.unpack("<HH", squeezed[26:30])
    inside = 30 + name_length + extra_length  # the first byte of the first compressed stream
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return {
        "empty": b"",
        "truncated": good[:7],
        "corrupt-stream": squeezed[:inside]
        + bytes([squeezed[inside] ^ 0xFF])
        + squeezed[inside + 1 :],
        "unknown-method": good[:method] + b"\x63\x00" + good[method + 2 :],
        "bare-npy": buffer.getvalue(),
    }


@pytest.mark.parametrize(
    "damage", ["empty", "truncated", "corrupt-stream", "unknown-method", "bare-npy"]
)
def test_a_damaged_node_file_is_a_named_error(tmp_path, damage):
    path = tmp_path / "node.npz"
    path.write_bytes(_damaged(tmp_path)[damage])
    with pytest.raises(DatasetError, match="node data file"):
        load_node_file(path, "iris")


@pytest.mark.parametrize(
    "damage", ["empty", "truncated", "corrupt-stream", "unknown-method", "bare-npy"]
)
def test_a_damaged_data_file_is_a_named_error(tmp_path, damage):
    path = tmp_path / "mine.npz"
    path.write_bytes(_damaged(tmp_path)[damage])
    with pytest.raises(DatasetError, match=r"mine\.npz"):
        read_labelled(str(path))


# --- what fuzzing found (tests/fuzz/test_fuzz_data.py) ----------------------------------------


def test_complex_features_are_refused_not_cast_to_their_real_part(cora):
    tx = restricted_load(cora["tx"]).toarray().astype(np.complex64)
    _refused(_with(cora, "tx", tx), "ind.cora.tx", "complex64")


def test_an_npz_whose_x_is_a_single_number_is_a_named_error(tmp_path):
    """``len()`` of a 0-d array raised TypeError."""
    path = tmp_path / "scalar.npz"
    np.savez(path, x=np.float32(1.0), y=np.int64(0))
    with pytest.raises(DatasetError, match="single number"):
        read_labelled(str(path))


def test_a_ratings_file_with_an_id_past_int64_is_a_named_error(tmp_path):
    """MovieLens-1M's ratings.dat is not pinned: an id past int64 raised OverflowError."""
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("1::99999999999999999999::5::0\n")
    with pytest.raises(DatasetError, match=r"ratings\.dat"):
        load_movielens(tmp_path, "ml-1m")
