"""MovieLens ratings (GroupLens): ML-100K's ``u.data`` and its official splits, and ML-1M's
``ratings.dat`` through the same code path.

The data's licence forbids redistribution: it is never shipped with fedcore. For users,
``download=True`` fetches GroupLens' zip, extracts the ratings and checks them against pinned
sha256s; tests and benchmarks read ``$FEDCORE_DATA/ml-100k/``.

Splits: ``u1``..``u5`` are GroupLens' 5-fold cross-validation (``mku.sh``): fold i tests on
lines ``20000 (i-1)`` to ``20000 i`` of ``u.data`` and trains on the rest, so they are rebuilt
here from ``u.data`` alone (a test checks ``u1`` against the shipped files). ``ua``/``ub``
(10 test ratings per user) are read from their files.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError
from fedcore.datasets.files import missing_error, sha256_file, verify_sha256

ML100K_SHA256 = {"u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"}
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
FOLDS = ("u1", "u2", "u3", "u4", "u5")
_FOLD_SIZE = 20_000


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


def _parse(text: str, separator: str) -> np.ndarray:
    table = np.array([line.split(separator)[:3] for line in text.splitlines() if line], np.int64)
    if table.ndim != 2 or table.shape[1] != 3:
        raise DatasetError("ratings file is not 'user<sep>item<sep>rating<sep>timestamp' lines")
    return table


def _ratings(table: np.ndarray, num_users: int, num_items: int) -> Ratings:
    if table[:, 2].min() < 1 or table[:, 2].max() > 5:
        raise DatasetError("ratings must be in 1..5")
    return Ratings(
        table[:, 0] - 1, table[:, 1] - 1, table[:, 2].astype(np.float32), num_users, num_items
    )


def _fetch_ml100k(folder: Path) -> None:
    import urllib.request

    from fedcore.datasets.files import USER_AGENT

    request = urllib.request.Request(ML100K_URL, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            archive = zipfile.ZipFile(io.BytesIO(response.read()))
    except OSError as err:
        raise DatasetError(f"could not download {ML100K_URL}: {err}") from None
    folder.mkdir(parents=True, exist_ok=True)
    for name in archive.namelist():
        base = name.rsplit("/", 1)[-1]
        if base and not name.endswith("/"):
            (folder / base).write_bytes(archive.read(name))
    actual = sha256_file(folder / "u.data")
    if actual != ML100K_SHA256["u.data"]:
        (folder / "u.data").unlink()  # not left in the cache to be found next time
        raise DatasetError(f"downloaded u.data has sha256 {actual}, expected the pinned one")


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
        return _ratings(_parse(path.read_text(), "\t"), 943, 1682)
    if name == "ml-1m":
        path = folder / "ratings.dat"
        if not path.is_file():
            raise missing_error("ml-1m", [path], downloadable=False)
        table = _parse(path.read_text(encoding="latin-1"), "::")
        return _ratings(table, int(table[:, 0].max()), int(table[:, 1].max()))
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
    if split in ("ua", "ub"):
        folder = Path(data_dir) / "ml-100k"
        parts = []
        for kind in ("base", "test"):
            path = folder / f"{split}.{kind}"
            if not path.is_file():
                raise missing_error(f"ml-100k split {split}", [path], downloadable=True)
            parts.append(_ratings(_parse(path.read_text(), "\t"), 943, 1682))
        return parts[0], parts[1]
    raise ValueError(f"unknown split {split!r}; expected one of {(*FOLDS, 'ua', 'ub')}")
