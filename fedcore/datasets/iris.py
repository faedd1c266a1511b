"""scikit-learn's bundled Iris: 150 flowers, 4 measurements, 3 species (k-means' classic)."""

from __future__ import annotations

import numpy as np

from fedcore.datasets.base import Dataset

NUM_CLASSES = 3
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of a run
SCALE = 8.0  # centimetres over 8: every measurement (at most 7.9) in [0, 1], distances kept


def load_iris() -> Dataset:
    """150 flowers split 120 train / 30 test, stratified, identical on every call.

    The four measurements (cm) are divided by one constant, so that every feature lies in
    [0, 1] as fedcore's datasets do, while distances (and so k-means) keep their geometry.
    """
    from sklearn.datasets import load_iris as sklearn_iris  # seconds to import: on use only
    from sklearn.model_selection import train_test_split

    bunch = sklearn_iris()
    x = (bunch.data / SCALE).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return Dataset("iris", x_train, y_train, x_test, y_test, NUM_CLASSES)
