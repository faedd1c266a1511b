"""A deployed client's own dataset: one ``.npz`` file on the SuperNode's machine.

A SuperNode started with ``--node-config "partition-id=3 data-path=/data/site3.npz"`` trains
on that file only; nothing else of the dataset needs to exist on its machine. The file holds
``x_train`` (N, D) float features and ``y_train`` (N,) integer labels, and optionally
``x_test``/``y_test`` for client-side evaluation. D and the label range must be those of the
run's dataset (:data:`SHAPES`), since every client trains the same model.

:func:`write_node_files` cuts a shared dataset into such files, for demos and tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError
from fedcore.datasets.files import read_npz

SHAPES: dict[str, tuple[int, int]] = {
    "digits": (64, 10),
    "mnist": (784, 10),
    "femnist": (784, 62),
    "iris": (4, 3),
}
"""(features, classes) of each dataset a node file can stand for."""


def load_node_file(path: Path, dataset: str) -> dict[str, np.ndarray]:
    """The arrays of a node's file, checked against ``dataset``'s shape.

    Raises :class:`DatasetError` naming the file and what is wrong with it."""
    if dataset not in SHAPES:
        raise DatasetError(f"node data files stand for {', '.join(SHAPES)}, not {dataset!r}")
    features, classes = SHAPES[dataset]
    if not path.is_file():
        raise DatasetError(
            f"node data file {path} does not exist; point the SuperNode's node config "
            f"'data-path' at this client's .npz file (x_train, y_train[, x_test, y_test])"
        )
    arrays = read_npz(path, "node data file")
    splits = ["train"] + (["test"] if "x_test" in arrays or "y_test" in arrays else [])
    out = {}
    for split in splits:
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None or y is None:
            raise DatasetError(f"node data file {path} lacks x_{split} or y_{split}")
        if x.ndim != 2 or x.shape[1] != features or y.shape != (len(x),):
            raise DatasetError(
                f"node data file {path}: x_{split} must be (N, {features}) and y_{split} "
                f"(N,) for {dataset}, got {x.shape} and {y.shape}"
            )
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            raise DatasetError(f"node data file {path}: x_{split} must be finite floats")
        if not np.issubdtype(y.dtype, np.integer) or (
            len(y) and not 0 <= y.min() <= y.max() < classes
        ):
            raise DatasetError(
                f"node data file {path}: y_{split} must be integer labels in [0, {classes})"
            )
        out[f"x_{split}"] = x.astype(np.float32)
        out[f"y_{split}"] = y.astype(np.int64)
    if len(out["y_train"]) == 0:
        raise DatasetError(f"node data file {path} has no training examples")
    if "x_test" not in out:
        out["x_test"] = np.zeros((0, features), np.float32)
        out["y_test"] = np.zeros(0, np.int64)
    return out


def write_node_files(
    clients: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], out: Path
) -> list[Path]:
    """One ``client-<i>.npz`` per (x_train, y_train, x_test, y_test) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (x_train, y_train, x_test, y_test) in enumerate(clients):
        path = out / f"client-{i}.npz"
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        paths.append(path)
    return paths
