"""MovieLens: counts, the official splits rebuilt from u.data, checksums, download, ML-1M."""

import zipfile

import numpy as np
import pytest

from fedcore.datasets import DatasetError, movielens, resolve_data_dir
from fedcore.datasets.movielens import load_movielens, official_split


def test_ml100k_has_the_published_counts():
    r = load_movielens(resolve_data_dir(None))
    assert len(r) == 100_000
    assert len(np.unique(r.users)) == 943 and len(np.unique(r.items)) == 1682
    assert set(np.unique(r.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("split", ["u1", "ua"])
@pytest.mark.parametrize("kind", ["base", "test"])
def test_splits_rebuilt_from_u_data_equal_the_shipped_files(split, kind):
    data = resolve_data_dir(None)
    path = data / "ml-100k" / f"{split}.{kind}"
    if not path.is_file():  # a cache filled by fedcore's download holds u.data only
        pytest.skip(f"{path} is not there to compare with")
    train, test = official_split(data, split)
    ours = train if kind == "base" else test
    shipped = np.loadtxt(path, dtype=np.int64)
    ours_rows = np.stack([ours.users, ours.items, ours.ratings.astype(np.int64)], axis=1)
    expected = shipped[:, :3] - np.array([1, 1, 0])
    assert np.array_equal(np.unique(ours_rows, axis=0), np.unique(expected, axis=0))
    assert len(ours_rows) == len(expected)


def test_the_five_folds_partition_the_ratings():
    data = resolve_data_dir(None)
    tests = [official_split(data, f"u{i}")[1] for i in range(1, 6)]
    assert sum(len(t) for t in tests) == 100_000


def test_ua_and_ub_test_ten_disjoint_ratings_of_every_user():
    data = resolve_data_dir(None)
    (_, ua), (ub_train, ub) = official_split(data, "ua"), official_split(data, "ub")
    for test in (ua, ub):
        assert np.array_equal(np.bincount(test.users, minlength=943), np.full(943, 10))
    pairs = {(u, i) for u, i in zip(ua.users.tolist(), ua.items.tolist(), strict=True)}
    assert not pairs & set(zip(ub.users.tolist(), ub.items.tolist(), strict=True))
    assert len(ub_train) + len(ub) == 100_000


def test_a_corrupt_u_data_is_refused(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t1\t5\t0\n")
    with pytest.raises(DatasetError, match="corrupt"):
        load_movielens(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="download=True"):
        load_movielens(tmp_path)


def test_ml1m_ratings_dat_goes_through_the_same_parser(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    lines = ["1::1193::5::978300760", "1::661::3::978302109", "6040::1::4::956703932"]
    (tmp_path / "ml-1m" / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    r = load_movielens(tmp_path, "ml-1m")
    assert len(r) == 3 and r.num_users == 6040 and r.num_items == 1193
    assert r.users.tolist() == [0, 0, 6039] and r.items.tolist() == [1192, 660, 0]
    assert r.ratings.tolist() == [5.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["0::1193::5::978300760"], "user values span 0..0"),
        (["1::1193::6::978300760"], "rating values span 6..6"),
        (["1::1193::five::978300760"], "lines of integers"),
        (["1::1193"], "lines of integers"),
    ],
)
def test_a_malformed_ratings_file_names_the_problem(tmp_path, lines, message):
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_movielens(tmp_path, "ml-1m")


def _zip_with(u_data: bytes, path) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", u_data)
        archive.writestr("ml-100k/README", "GroupLens")
    return path.as_uri()


def test_download_extracts_and_checks_the_pinned_sha256(tmp_path, monkeypatch):
    """The users' path: GroupLens' zip (here a file:// copy of it) is fetched, extracted and
    checked; a zip whose u.data differs from the pinned one is refused."""
    real = (resolve_data_dir(None) / "ml-100k" / "u.data").read_bytes()
    monkeypatch.setattr(movielens, "ML100K_URL", _zip_with(real, tmp_path / "good.zip"))
    r = load_movielens(tmp_path / "cache", download=True)
    assert len(r) == 100_000
    assert [p.name for p in (tmp_path / "cache" / "ml-100k").iterdir()] == ["u.data"]

    tampered = real.replace(b"\t5\t", b"\t4\t", 1)
    monkeypatch.setattr(movielens, "ML100K_URL", _zip_with(tampered, tmp_path / "bad.zip"))
    with pytest.raises(DatasetError, match="sha256"):
        load_movielens(tmp_path / "other", download=True)
    assert not (tmp_path / "other" / "ml-100k" / "u.data").exists()


def test_a_download_that_is_not_the_zip_is_refused(tmp_path, monkeypatch):
    (tmp_path / "page.html").write_text("<html>Not found</html>")
    monkeypatch.setattr(movielens, "ML100K_URL", (tmp_path / "page.html").as_uri())
    with pytest.raises(DatasetError, match="not GroupLens' ML-100K zip"):
        load_movielens(tmp_path / "cache", download=True)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("ml-100k/README", "no ratings here")
    monkeypatch.setattr(movielens, "ML100K_URL", (tmp_path / "other.zip").as_uri())
    with pytest.raises(DatasetError, match="not GroupLens' ML-100K zip"):
        load_movielens(tmp_path / "cache", download=True)
    assert list((tmp_path / "cache" / "ml-100k").iterdir()) == []
