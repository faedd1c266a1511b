"""scikit-learn's bundled diabetes regression data (task ``linear``): offline, tiny."""

from __future__ import annotations

import numpy as np

from fedcore.datasets.base import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of a run


def load_diabetes() -> Dataset:
    """442 patients split 353 train / 89 test, identical on every call.

    Ten baseline variables, as scikit-learn ships them (each column centred and scaled to
    unit norm: every value within [-0.2, 0.2]), and the target, a measure of disease
    progression after one year (25 to 346), as float64. A regression: ``num_classes`` is 0
    and ``y`` holds real targets, not labels.
    """
    from sklearn.datasets import load_diabetes as sklearn_diabetes  # slow import: on use
    from sklearn.model_selection import train_test_split

    x, y = sklearn_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float64), y.astype(np.float64), test_size=TEST_FRACTION, random_state=SPLIT_SEED
    )
    return Dataset("diabetes", x_train, y_train, x_test, y_test, 0)


def load_regression(name: str) -> Dataset:
    """Regression dataset ``name`` (one of ``fedcore.datasets.REGRESSION_DATASETS``)."""
    if name == "diabetes":
        return load_diabetes()
    raise ValueError(f"unknown regression dataset {name!r}; expected 'diabetes'")
