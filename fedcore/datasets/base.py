"""The in-memory dataset record every task trains on, and the one error loaders raise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetError(Exception):
    """A dataset is missing, corrupt or cannot be fetched.

    The message always says which file or folder is at fault and what to do about it,
    because the person reading it is usually running an experiment, not debugging a loader.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled train/test split as flat feature matrices.

    ``eq=False`` keeps identity comparison: field-wise ``==`` on arrays is ambiguous.

    Shapes:
        x_train: (N, D) float32 in [0, 1]; y_train: (N,) int64 in [0, num_classes).
        x_test: (M, D) float32 in [0, 1]; y_test: (M,) int64.
        groups_train / groups_test: (N,) / (M,) int64 natural client id of each sample
        (the FEMNIST writer), or ``None`` when the data has no natural clients.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    groups_train: np.ndarray | None = None
    groups_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            groups = getattr(self, f"groups_{split}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"{self.name}: x_{split} must be (N, D) and y_{split} (N,), "
                    f"got {x.shape} and {y.shape}"
                )
            if groups is not None and groups.shape != y.shape:
                raise ValueError(
                    f"{self.name}: groups_{split} must be {y.shape}, got {groups.shape}"
                )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(
                f"{self.name}: train has {self.x_train.shape[1]} features, "
                f"test has {self.x_test.shape[1]}"
            )

    @property
    def num_features(self) -> int:
        """Length D of one flattened sample."""
        return int(self.x_train.shape[1])
