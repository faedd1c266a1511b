"""Datasets as plain arrays: one ``load_dataset`` entry point, checksums, clear errors.

Nothing here touches the disk or network at import time; data is read (or, with
``download=True``, fetched) only when ``load_dataset`` is called.
"""

from __future__ import annotations

from pathlib import Path

from fedcore.datasets.base import Dataset, DatasetError
from fedcore.datasets.digits import load_digits
from fedcore.datasets.femnist import load_femnist
from fedcore.datasets.mnist import load_mnist
from fedcore.datasets.paths import resolve_data_dir

DATASETS: tuple[str, ...] = ("digits", "mnist", "femnist")

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset", "resolve_data_dir"]


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
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
