"""MNIST from the shared IDX files: shapes, scaling, labels, and rejection of corrupt copies."""

import re
import shutil

import numpy as np
import pytest

from fedcore.datasets import DatasetError, load_dataset, resolve_data_dir
from fedcore.datasets.mnist import MNIST_SHA256, TEST_LABELS, TRAIN_LABELS, load_mnist

SHARED = resolve_data_dir()
pytestmark = pytest.mark.skipif(
    not all((SHARED / "mnist" / name).is_file() for name in MNIST_SHA256),
    reason=f"MNIST IDX files not found under {SHARED / 'mnist'} (set FEDCORE_DATA)",
)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture
def mnist_copy(tmp_path):
    """A writable copy of the shared MNIST folder; returns its data dir."""
    shutil.copytree(SHARED / "mnist", tmp_path / "mnist")
    for path in (tmp_path / "mnist").iterdir():
        path.chmod(0o644)
    return tmp_path


def test_counts_shapes_and_dtypes(mnist):
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.num_classes == 10 and mnist.num_features == 784
    assert mnist.groups_train is None


def test_pixels_scaled_to_unit_interval(mnist):
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    # The well-known MNIST pixel mean is 0.1307: a wrong scale or orientation moves it.
    assert abs(float(mnist.x_train.mean()) - 0.1307) < 1e-3


def test_label_distribution_is_roughly_balanced(mnist):
    train_counts = np.bincount(mnist.y_train, minlength=10)
    test_counts = np.bincount(mnist.y_test, minlength=10)
    assert len(train_counts) == 10 and len(test_counts) == 10
    assert train_counts.min() > 5000 and train_counts.max() < 7000
    assert test_counts.min() > 800 and test_counts.max() < 1200


def test_hash_constants_match_shared_sha256sums():
    sums_file = SHARED / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip(f"no {sums_file}")
    sums = dict(reversed(line.split()) for line in sums_file.read_text().splitlines())
    for name, expected in MNIST_SHA256.items():
        assert sums[f"mnist/{name}"] == expected


def test_flipped_byte_is_rejected_naming_file_and_hashes(mnist_copy):
    path = mnist_copy / "mnist" / TEST_LABELS
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="sha256") as caught:
        load_mnist(mnist_copy)
    message = str(caught.value)
    assert TEST_LABELS in message and MNIST_SHA256[TEST_LABELS] in message
    assert "download=True" in message


def test_truncated_file_is_rejected(mnist_copy):
    path = mnist_copy / "mnist" / TRAIN_LABELS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=re.escape(TRAIN_LABELS) + ".*sha256"):
        load_mnist(mnist_copy)


def test_download_does_not_overwrite_a_corrupt_file(mnist_copy, tmp_path):
    path = mnist_copy / "mnist" / TEST_LABELS
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="sha256"):
        load_mnist(mnist_copy, download=True, base_urls=[(tmp_path / "none").as_uri()])
    assert path.read_bytes() == b"garbage"


def test_download_from_file_url_mirror_succeeds(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED / "mnist", mirror)
    dead = (tmp_path / "dead-mirror").as_uri()
    data_dir = tmp_path / "data"
    dataset = load_mnist(data_dir, download=True, base_urls=[dead, mirror.as_uri() + "/"])
    assert dataset.x_train.shape == (60000, 784)
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(MNIST_SHA256)


def test_download_of_wrong_bytes_leaves_nothing_behind(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_SHA256:
        (mirror / name).write_bytes(b"not mnist")
    with pytest.raises(DatasetError, match="sha256"):
        load_mnist(tmp_path / "data", download=True, base_urls=[mirror.as_uri()])
    assert list((tmp_path / "data" / "mnist").iterdir()) == []
