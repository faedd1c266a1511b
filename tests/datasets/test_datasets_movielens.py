"""MovieLens-100K: counts, the official splits rebuilt from u.data, checksums."""

import numpy as np
import pytest

from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.movielens import load_movielens, official_split


def test_ml100k_has_the_published_counts():
    r = load_movielens(resolve_data_dir(None))
    assert len(r) == 100_000
    assert len(np.unique(r.users)) == 943 and len(np.unique(r.items)) == 1682
    assert set(np.unique(r.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("kind", ["base", "test"])
def test_fold_u1_rebuilt_from_u_data_equals_the_shipped_files(kind):
    data = resolve_data_dir(None)
    train, test = official_split(data, "u1")
    ours = train if kind == "base" else test
    shipped = np.loadtxt(data / "ml-100k" / f"u1.{kind}", dtype=np.int64)
    ours_rows = np.stack([ours.users, ours.items, ours.ratings.astype(np.int64)], axis=1)
    expected = shipped[:, :3] - np.array([1, 1, 0])
    assert np.array_equal(np.unique(ours_rows, axis=0), np.unique(expected, axis=0))
    assert len(ours_rows) == len(expected)


def test_the_five_folds_partition_the_ratings():
    data = resolve_data_dir(None)
    tests = [official_split(data, f"u{i}")[1] for i in range(1, 6)]
    assert sum(len(t) for t in tests) == 100_000


def test_a_corrupt_u_data_is_refused(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t1\t5\t0\n")
    with pytest.raises(DatasetError, match="corrupt"):
        load_movielens(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="download=True"):
        load_movielens(tmp_path)
