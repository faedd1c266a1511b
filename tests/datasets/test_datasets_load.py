"""load_dataset dispatch, missing-data errors and the Dataset record's own checks."""

import dataclasses
import re

import numpy as np
import pytest

from fedcore.datasets import DATASETS, Dataset, DatasetError, load_dataset


def _tiny(**overrides):
    fields = {
        "name": "tiny",
        "x_train": np.zeros((4, 3), np.float32),
        "y_train": np.zeros(4, np.int64),
        "x_test": np.zeros((2, 3), np.float32),
        "y_test": np.zeros(2, np.int64),
        "num_classes": 2,
    }
    return Dataset(**(fields | overrides))


def test_registered_names():
    assert DATASETS == ("digits", "mnist", "femnist", "iris")


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="digits, mnist, femnist"):
        load_dataset("cifar10")


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist", tmp_path)
    message = str(caught.value)
    assert "FEDCORE_DATA" in message and "download=True" in message
    assert "data.download=true" in message
    assert str(tmp_path / "mnist") in message
    assert not (tmp_path / "mnist").exists()


def test_data_dir_accepts_strings(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path))):
        load_dataset("mnist", str(tmp_path))


def test_num_features_and_immutability():
    dataset = _tiny()
    assert dataset.num_features == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.name = "other"


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="y_train"):
        _tiny(y_train=np.zeros(3, np.int64))


def test_mismatched_feature_counts_are_rejected():
    with pytest.raises(ValueError, match="features"):
        _tiny(x_test=np.zeros((2, 5), np.float32))


def test_groups_must_match_labels():
    with pytest.raises(ValueError, match="groups_test"):
        _tiny(groups_train=np.zeros(4, np.int64), groups_test=np.zeros(3, np.int64))
