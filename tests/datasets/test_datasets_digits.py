"""digits: sklearn's 1,797 images with one fixed stratified 80/20 split."""

import numpy as np
import pytest

from fedcore.datasets import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_counts_and_shapes(digits):
    assert digits.x_train.shape == (1437, 64)
    assert digits.x_test.shape == (360, 64)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert digits.num_classes == 10 and digits.num_features == 64


def test_dtypes_and_range(digits):
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    assert set(np.unique(digits.y_test)) == set(range(10))


def test_split_is_identical_across_calls(digits):
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_split_is_stratified(digits):
    train_share = np.bincount(digits.y_train) / len(digits.y_train)
    test_share = np.bincount(digits.y_test) / len(digits.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_no_natural_clients(digits):
    assert digits.groups_train is None and digits.groups_test is None
