"""The IDX parser accepts the spec's layout and names the file when bytes are malformed."""

import gzip
import struct

import numpy as np
import pytest

from fedcore.datasets import DatasetError
from fedcore.datasets.idx import parse_idx, read_idx_gz


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_round_trip_of_hand_built_file():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(_idx(array)), array)


def test_wrong_magic_number_is_rejected():
    raw = bytearray(_idx(np.zeros(3, dtype=np.uint8)))
    raw[2] = 0x0D  # float32 type code
    with pytest.raises(DatasetError, match=r"labels\.idx.*magic"):
        parse_idx(bytes(raw), "labels.idx")


def test_truncated_header_is_rejected():
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(_idx(np.zeros((2, 2), dtype=np.uint8))[:7], "x")


def test_missing_data_bytes_are_rejected():
    raw = _idx(np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"x: IDX header promises shape \(5, 4\)"):
        parse_idx(raw[:-1], "x")


def test_non_gzip_file_names_the_file(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"images\.gz"):
        read_idx_gz(path, ndim=3)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_idx(np.ones((4, 28, 28), dtype=np.uint8)))[:-20])
    with pytest.raises(DatasetError, match=r"images\.gz"):
        read_idx_gz(path, ndim=3)


def test_wrong_number_of_dimensions_is_rejected(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(_idx(np.ones((4, 2), dtype=np.uint8))))
    with pytest.raises(DatasetError, match="expected 1 IDX dimensions"):
        read_idx_gz(path, ndim=1)
