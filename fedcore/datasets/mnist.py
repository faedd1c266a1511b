"""MNIST from the four original IDX files, checksum-verified, optionally downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedcore.datasets.base import Dataset, DatasetError
from fedcore.datasets.files import download_file, missing_error, missing_files, verify_sha256
from fedcore.datasets.idx import read_idx_gz

NUM_CLASSES = 10
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

# sha256 of the official files (identical at LeCun's site and the torchvision mirror).
MNIST_SHA256 = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# The original source first, then the mirror torchvision uses (LeCun's site is often down).
MNIST_URLS = (
    "https://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)


def _split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split as (N, 784) float32 in [0, 1] and (N,) int64 labels."""
    images = read_idx_gz(images_path, ndim=3)
    labels = read_idx_gz(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{images_path} holds images of shape {images.shape} but {labels_path} holds "
            f"{labels.shape[0]} labels; expected (N, 28, 28) images and N labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{labels_path} has label {labels.max()}, expected 0..9")
    x = np.divide(images.reshape(images.shape[0], -1), np.float32(255.0), dtype=np.float32)
    return x, labels.astype(np.int64)


def fetch_mnist(folder: Path, base_urls: Sequence[str] = MNIST_URLS) -> None:
    """Download whichever of the four files are missing from ``folder``, each verified."""
    for path in missing_files(folder, MNIST_SHA256):
        download_file(path.name, folder, MNIST_SHA256[path.name], base_urls)


def load_mnist(
    data_dir: Path, *, download: bool = False, base_urls: Sequence[str] = MNIST_URLS
) -> Dataset:
    """MNIST from ``<data_dir>/mnist/``: 60,000 train / 10,000 test, 784 features, 10 classes.

    Files already present are never overwritten: a corrupt one raises ``DatasetError``
    telling the user to delete it, so a bad copy is never silently replaced or used.
    """
    folder = _checked_folder(data_dir, download, base_urls, MNIST_SHA256)
    x_train, y_train = _split(folder / TRAIN_IMAGES, folder / TRAIN_LABELS)
    x_test, y_test = _split(folder / TEST_IMAGES, folder / TEST_LABELS)
    return Dataset("mnist", x_train, y_train, x_test, y_test, NUM_CLASSES)


def load_mnist_test(
    data_dir: Path, *, download: bool = False, base_urls: Sequence[str] = MNIST_URLS
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10,000 test images and labels only (what a server evaluating on the held-out
    set needs; the training files are neither read nor required)."""
    wanted = {name: MNIST_SHA256[name] for name in (TEST_IMAGES, TEST_LABELS)}
    folder = _checked_folder(data_dir, download, base_urls, wanted)
    return _split(folder / TEST_IMAGES, folder / TEST_LABELS)


def _checked_folder(
    data_dir: Path, download: bool, base_urls: Sequence[str], files: dict[str, str]
) -> Path:
    """``<data_dir>/mnist`` once ``files`` (name -> sha256) are there and verified."""
    folder = data_dir / "mnist"
    if download:
        for path in missing_files(folder, files):
            download_file(path.name, folder, files[path.name], base_urls)
    missing = missing_files(folder, files)
    if missing:
        raise missing_error("mnist", missing, downloadable=True)
    for name, expected in files.items():
        verify_sha256(folder / name, expected)
    return folder
