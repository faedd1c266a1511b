"""scikit-learn's bundled 8x8 digits: tiny, offline, for fast tests and smoke runs."""

from __future__ import annotations

import numpy as np

from fedcore.datasets.base import Dataset

NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of a run


def load_digits() -> Dataset:
    """1,797 digits split 1,437 train / 360 test, stratified, identical on every call.

    Pixels are 0..16 in the source, scaled to [0, 1]; 64 features.
    """
    # Imported here: scikit-learn takes seconds to import, and most runs never need digits.
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, NUM_CLASSES)
