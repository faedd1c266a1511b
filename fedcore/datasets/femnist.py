"""The LEAF FEMNIST subset: 105 real writers as natural non-IID clients, 62 classes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fedcore.datasets.base import Dataset, DatasetError
from fedcore.datasets.files import missing_error, verify_sha256
from fedcore.datasets.paths import ENV_VAR

NUM_CLASSES = 62  # 0-9 digits, 10-35 upper case, 36-61 lower case
WRITERS = 105  # the natural clients of the pinned subset (its sha256 below)
FEMNIST_FILE = "femnist_leaf_subset.npz"
FEMNIST_SHA256 = "22b6d235fef4338ccc1c8a6b60057bb14f7b7eab82e95f9d20d088f51e32ee70"
REQUIRED_ARRAYS = ("x_train", "y_train", "writer_train", "x_test", "y_test", "writer_test")
LEAF_URL = "https://github.com/TalwalkarLab/leaf"
# No download exists, so the usual "re-download" advice would mislead.
CORRUPT_HINT = f"replace it with a good copy, or set {ENV_VAR} to a folder that holds one"


def _no_download_error(path: Path) -> DatasetError:
    """Why ``download=True`` cannot help: the subset has no public URL."""
    return DatasetError(
        f"femnist cannot be downloaded: {FEMNIST_FILE} is a subset converted from processed "
        f"LEAF FEMNIST shards ({LEAF_URL}) and has no public download URL. Place the file at "
        f"{path}, or set {ENV_VAR} to a folder that holds femnist/{FEMNIST_FILE}."
    )


def _pixels(x: np.ndarray) -> np.ndarray:
    """LEAF stores white background as 255; invert so ink is high and background 0."""
    ink = np.subtract(np.uint8(255), x.reshape(x.shape[0], -1), dtype=np.uint8)
    return np.divide(ink, np.float32(255.0), dtype=np.float32)


def load_femnist(data_dir: Path, *, download: bool = False) -> Dataset:
    """FEMNIST from ``<data_dir>/femnist/femnist_leaf_subset.npz``, with writer ids as groups.

    ``groups_train``/``groups_test`` index the same 105 writers, so a writer's train and
    test samples belong to one natural client.
    """
    path = data_dir / "femnist" / FEMNIST_FILE
    if not path.is_file():
        if download:
            raise _no_download_error(path)
        error = missing_error("femnist", [path], downloadable=False)
        raise DatasetError(f"{error} The subset is built from LEAF ({LEAF_URL}).")
    verify_sha256(path, FEMNIST_SHA256, remedy=CORRUPT_HINT)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in REQUIRED_ARRAYS}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path} is not a valid FEMNIST archive ({err})") from err
    return Dataset(
        "femnist",
        x_train=_pixels(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=_pixels(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64),
        num_classes=NUM_CLASSES,
        groups_train=arrays["writer_train"].astype(np.int64),
        groups_test=arrays["writer_test"].astype(np.int64),
    )
