"""MovieLens ratings (GroupLens): ML-100K's ``u.data`` and its official splits, and ML-1M's
``ratings.dat`` through the same code path.

The data's licence forbids redistribution: it is never shipped with fedcore. For users,
``download=True`` fetches GroupLens' zip, extracts the ratings and checks them against pinned
sha256s; tests and benchmarks read ``$FEDCORE_DATA/ml-100k/``.

Every split is rebuilt from ``u.data`` alone by GroupLens' own rules (``mku.sh``), so only
that one pinned file is ever read: ``u1``..``u5`` (5-fold cross-validation) test on lines
``20000 (i-1)`` to ``20000 i`` and train on the rest; ``ua``/``ub`` (``allbut.pl``) test on
each user's first ten, resp. next ten, ratings in file order. Tests check ``u1`` and ``ua``
against the shipped files.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError
from fedcore.datasets.files import USER_AGENT, missing_error, sha256_file, verify_sha256

ML100K_SHA256 = {"u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"}
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_USERS, ML100K_ITEMS = 943, 1682
FOLDS = ("u1", "u2", "u3", "u4", "u5")
_FOLD_SIZE = 20_000
_ALLBUT = {"ua": (1, 10), "ub": (11, 20)}  # each user's ratings (by count) in the test set


@dataclass(frozen=True)
class Ratings:
    """Ratings as parallel arrays; users and items are 0-based ids (file id - 1)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray  # float32
    num_users: int
    num_items: int

    def __len__(self) -> int:
        return len(self.ratings)

    def subset(self, rows: np.ndarray) -> Ratings:
        return Ratings(
            self.users[rows], self.items[rows], self.ratings[rows], self.num_users, self.num_items
        )


def _parse(text: str, separator: str, source: str) -> np.ndarray:
    try:
        table = np.array(
            [line.split(separator)[:3] for line in text.splitlines() if line], np.int64
        )
    except (ValueError, OverflowError):  # not integers, or past int64
        table = None
    if table is None or table.ndim != 2 or table.shape[1] != 3:
        raise DatasetError(
            f"{source} is not 'user{separator}item{separator}rating{separator}timestamp' lines "
            "of integers"
        )
    return table


def _ratings(table: np.ndarray, num_users: int, num_items: int, source: str) -> Ratings:
    for column, what, top in ((0, "user", num_users), (1, "item", num_items), (2, "rating", 5)):
        low, high = int(table[:, column].min()), int(table[:, column].max())
        if low < 1 or high > top:
            raise DatasetError(f"{source}: {what} values span {low}..{high}, expected 1..{top}")
    return Ratings(
        table[:, 0] - 1, table[:, 1] - 1, table[:, 2].astype(np.float32), num_users, num_items
    )


def _fetch_ml100k(folder: Path) -> None:
    """Download GroupLens' zip and keep its ``u.data`` if it matches the pinned sha256 (put
    in place by an atomic rename, so the cache never holds a partial or wrong file)."""
    folder.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(ML100K_URL, headers={"User-Agent": USER_AGENT})
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        archive, part = Path(tmp) / "ml-100k.zip", Path(tmp) / "u.data"
        try:
            with urllib.request.urlopen(request, timeout=120) as src, archive.open("wb") as out:
                shutil.copyfileobj(src, out)
            with (
                zipfile.ZipFile(archive) as zipped,
                zipped.open("ml-100k/u.data") as src,
                part.open("wb") as out,
            ):
                shutil.copyfileobj(src, out)
        except (OSError, http.client.HTTPException) as err:
            raise DatasetError(f"could not download {ML100K_URL} into {folder}: {err}") from None
        except (zipfile.BadZipFile, zlib.error, KeyError) as err:
            raise DatasetError(f"{ML100K_URL} is not GroupLens' ML-100K zip: {err}") from None
        actual = sha256_file(part)
        if actual != ML100K_SHA256["u.data"]:
            raise DatasetError(f"downloaded u.data has sha256 {actual}, expected the pinned one")
        os.replace(part, folder / "u.data")


def load_movielens(data_dir: Path, name: str = "ml-100k", *, download: bool = False) -> Ratings:
    """All ratings of ``name`` ("ml-100k" or "ml-1m"), in file order."""
    folder = Path(data_dir) / name
    if name == "ml-100k":
        path = folder / "u.data"
        if not path.is_file() and download:
            _fetch_ml100k(folder)
        if not path.is_file():
            raise missing_error("ml-100k", [path], downloadable=True)
        verify_sha256(path, ML100K_SHA256["u.data"])
        return _ratings(
            _parse(path.read_text(), "\t", str(path)), ML100K_USERS, ML100K_ITEMS, str(path)
        )
    if name == "ml-1m":
        path = folder / "ratings.dat"
        if not path.is_file():
            raise missing_error("ml-1m", [path], downloadable=False)
        table = _parse(path.read_text(encoding="latin-1"), "::", str(path))
        return _ratings(table, int(table[:, 0].max()), int(table[:, 1].max()), str(path))
    raise ValueError(f"unknown MovieLens dataset {name!r}; expected 'ml-100k' or 'ml-1m'")


def official_split(
    data_dir: Path, split: str, *, download: bool = False
) -> tuple[Ratings, Ratings]:
    """(train, test) of ML-100K's split ``u1``..``u5``, ``ua`` or ``ub``."""
    ratings = load_movielens(data_dir, "ml-100k", download=download)
    if split in FOLDS:
        fold = FOLDS.index(split)
        test = np.zeros(len(ratings), bool)
        test[fold * _FOLD_SIZE : (fold + 1) * _FOLD_SIZE] = True
        return ratings.subset(np.flatnonzero(~test)), ratings.subset(np.flatnonzero(test))
    if split in _ALLBUT:
        first, last = _ALLBUT[split]
        order = np.argsort(ratings.users, kind="stable")  # by user, file order within
        starts = np.searchsorted(ratings.users[order], ratings.users[order])
        nth = np.empty(len(ratings), np.int64)
        nth[order] = np.arange(len(ratings)) - starts + 1  # each rating's count for its user
        test = (nth >= first) & (nth <= last)
        return ratings.subset(np.flatnonzero(~test)), ratings.subset(np.flatnonzero(test))
    raise ValueError(f"unknown split {split!r}; expected one of {(*FOLDS, 'ua', 'ub')}")
