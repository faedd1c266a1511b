"""Datasets as plain arrays: one ``load_dataset`` entry point, checksums, clear errors.

Nothing here touches the disk or network at import time; data is read (or, with
``download=True``, fetched) only when ``load_dataset`` is called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcore.datasets.base import Dataset, DatasetError
from fedcore.datasets.digits import load_digits
from fedcore.datasets.femnist import load_femnist
from fedcore.datasets.iris import load_iris
from fedcore.datasets.mnist import NUM_CLASSES as MNIST_CLASSES
from fedcore.datasets.mnist import load_mnist, load_mnist_test
from fedcore.datasets.node import SHAPES as NODE_SHAPES
from fedcore.datasets.paths import resolve_data_dir
from fedcore.datasets.planetoid import SHAPES as GRAPH_SHAPES

DATASETS: tuple[str, ...] = ("digits", "mnist", "femnist", "iris")
# Bayesian networks (task bayesnet: records forward-sampled from the network) and regression
# data (task linear); their loaders are the tasks' (fedcore.datasets.networks, .regression)
NETWORKS: tuple[str, ...] = ("asia", "sachs", "alarm", "child")
REGRESSION_DATASETS: tuple[str, ...] = ("diabetes",)

__all__ = [
    "DATASETS",
    "NETWORKS",
    "REGRESSION_DATASETS",
    "Dataset",
    "DatasetError",
    "input_width",
    "load_dataset",
    "load_test_split",
    "resolve_data_dir",
]


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = False
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``) from ``resolve_data_dir(data_dir)``.

    ``download=True`` fetches missing files (MNIST only; FEMNIST has no public URL and
    digits ships with scikit-learn). Raises ``ValueError`` for an unknown name and
    ``DatasetError`` for missing or corrupt data.
    """
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist(resolve_data_dir(data_dir), download=download)
    if name == "femnist":
        return load_femnist(resolve_data_dir(data_dir), download=download)
    if name == "iris":
        return load_iris()
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def input_width(name: str) -> int:
    """Features per sample of a built-in dataset, known without reading it (a model's input
    width, for estimating its size); 1 where it depends on the files."""
    return (NODE_SHAPES.get(name) or GRAPH_SHAPES.get(name) or (1, 1))[0]


def load_test_split(
    name: str, data_dir: str | Path | None = None, *, download: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """Dataset ``name``'s held-out test split ``(x, y)`` and its number of classes: what a
    server evaluating the global model holds. MNIST's training files are not read; digits
    and the FEMNIST subset are small and read whole."""
    if name == "mnist":
        return (*load_mnist_test(resolve_data_dir(data_dir), download=download), MNIST_CLASSES)
    ds = load_dataset(name, data_dir, download=download)
    return ds.x_test, ds.y_test, ds.num_classes
