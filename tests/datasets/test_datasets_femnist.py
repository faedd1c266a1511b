"""FEMNIST LEAF subset: counts, writers as natural clients, ink orientation, integrity."""

import shutil

import numpy as np
import pytest

from fedcore.datasets import DatasetError, load_dataset, resolve_data_dir
from fedcore.datasets.femnist import FEMNIST_FILE, FEMNIST_SHA256, load_femnist

SHARED = resolve_data_dir()
NUM_WRITERS = 105
pytestmark = pytest.mark.skipif(
    not (SHARED / "femnist" / FEMNIST_FILE).is_file(),
    reason=f"{FEMNIST_FILE} not found under {SHARED / 'femnist'} (set FEDCORE_DATA)",
)


@pytest.fixture(scope="module")
def femnist():
    return load_dataset("femnist")


def test_counts_shapes_and_dtypes(femnist):
    assert femnist.x_train.shape == (14708, 784) and femnist.x_test.shape == (1685, 784)
    assert femnist.x_train.dtype == np.float32 and femnist.y_train.dtype == np.int64
    assert femnist.num_classes == 62 and femnist.num_features == 784


def test_all_62_classes_present(femnist):
    assert set(np.unique(femnist.y_train)) == set(range(62))
    assert femnist.y_test.min() >= 0 and femnist.y_test.max() < 62


def test_groups_are_105_writers_covering_both_splits(femnist):
    assert femnist.groups_train.dtype == np.int64 and femnist.groups_test.dtype == np.int64
    assert femnist.groups_train.shape == femnist.y_train.shape
    assert femnist.groups_test.shape == femnist.y_test.shape
    assert set(np.unique(femnist.groups_train)) == set(range(NUM_WRITERS))
    assert set(np.unique(femnist.groups_test)) == set(range(NUM_WRITERS))


def test_ink_is_high_and_background_zero(femnist):
    assert femnist.x_train.min() == 0.0 and femnist.x_train.max() == 1.0
    # Mostly background: after inversion the mean is small and the median pixel is 0.
    assert float(femnist.x_train.mean()) < 0.2
    assert float(np.median(femnist.x_test)) == 0.0


def test_hash_constant_matches_shared_sha256sums():
    sums_file = SHARED / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip(f"no {sums_file}")
    assert f"{FEMNIST_SHA256}  femnist/{FEMNIST_FILE}" in sums_file.read_text().splitlines()


def test_corrupt_copy_is_rejected(tmp_path):
    (tmp_path / "femnist").mkdir()
    copy = tmp_path / "femnist" / FEMNIST_FILE
    shutil.copyfile(SHARED / "femnist" / FEMNIST_FILE, copy)
    raw = bytearray(copy.read_bytes())
    raw[100] ^= 0x01
    copy.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="sha256") as caught:
        load_femnist(tmp_path)
    assert FEMNIST_FILE in str(caught.value) and FEMNIST_SHA256 in str(caught.value)


def test_missing_file_explains_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError, match="FEDCORE_DATA") as caught:
        load_femnist(tmp_path)
    assert str(tmp_path / "femnist" / FEMNIST_FILE) in str(caught.value)


def test_download_explains_leaf_origin(tmp_path):
    with pytest.raises(DatasetError, match="LEAF") as caught:
        load_dataset("femnist", tmp_path, download=True)
    assert "github.com/TalwalkarLab/leaf" in str(caught.value)
    assert not (tmp_path / "femnist").exists()
