"""Bring your own data: labelled arrays from NPZ, CSV or IDX files, with no code.

A file spec is a path, optionally followed by ``#sha256=<64 hex digits>`` (pip's
convention) to pin its content. The format follows the name:

- ``.npz``: arrays ``x`` (N, ...) and ``y`` (N,), and optionally ``client`` (N,), each
  sample's natural client (for ``data.partition = "natural"``).
- ``.csv``: a header row; the label column (``data.label-column``), optionally a client
  column (``data.client-column``), every other column a numeric feature.
- IDX (``.idx``, ``-ubyte``, optionally ``.gz``): two specs joined by a comma, the samples
  and then the labels, as in MNIST's files; samples are scaled from bytes to [0, 1].

The client column or array of a test file is not used: the test set is the server's.
Labels may be integers or strings: the classes are the train file's sorted distinct labels,
numbered from 0; a test label the train file lacks is an error. Features are taken as they
are (no scaling across clients, which would pool their statistics). Every problem raises
:class:`DatasetError` naming the file, and the line or column where it can.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore.datasets.base import Dataset, DatasetError
from fedcore.datasets.files import read_npz, verify_sha256
from fedcore.datasets.idx import parse_idx

_PIN = re.compile(r"^(?P<path>.*?)#sha256=(?P<digest>[0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class FileSpec:
    """One input file and, optionally, the sha256 its content must have."""

    path: Path
    sha256: str | None = None

    @classmethod
    def parse(cls, text: str) -> FileSpec:
        text = text.strip()
        match = _PIN.match(text)
        if match:
            return cls(Path(match["path"]), match["digest"].lower())
        if "#" in text:
            raise DatasetError(
                f"{text!r}: a file may be pinned only as '<path>#sha256=<64 hex digits>'"
            )
        return cls(Path(text))

    def open_checked(self) -> Path:
        """The path, once it exists and (if pinned) matches its sha256."""
        if not self.path.is_file():
            raise DatasetError(
                f"{self.path} not found (resolved from {Path.cwd()}); give data.train-file and "
                "data.test-file as paths to existing NPZ, CSV or IDX files"
            )
        if self.sha256 is not None:
            verify_sha256(self.path, self.sha256, remedy="Check that this is the file you meant.")
        return self.path


@dataclass(frozen=True)
class Labelled:
    """Samples as read: features (N, D) float32, raw labels (N,), natural clients or None."""

    x: np.ndarray
    labels: np.ndarray
    clients: np.ndarray | None


def _is_idx(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith(".idx") or name.endswith("-ubyte") or ".idx" in name


def read_labelled(spec: str, label_column: str = "label", client_column: str = "") -> Labelled:
    """The samples of one split from its file spec (see the module docstring)."""
    parts = [FileSpec.parse(p) for p in spec.split(",")]
    if len(parts) == 2:
        if not all(_is_idx(p.path) for p in parts):
            raise DatasetError(
                f"{spec!r}: two files (samples, labels) are for IDX only; "
                "NPZ and CSV hold the labels in the file"
            )
        return _read_idx(*(p.open_checked() for p in parts))
    if len(parts) != 1:
        raise DatasetError(f"{spec!r}: expected one file, or two IDX files (samples, labels)")
    path = parts[0].open_checked()
    suffix = path.name.lower()
    if suffix.endswith(".npz"):
        return _read_npz(path)
    if suffix.endswith(".csv"):
        return _read_csv(path, label_column, client_column)
    if _is_idx(path):
        raise DatasetError(f"{path}: IDX needs two files, 'samples,labels'")
    raise DatasetError(f"{path}: unknown format; expected .npz, .csv or IDX files")


def _features(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim < 1 or len(x) == 0:
        raise DatasetError(f"{source}: no samples")
    try:
        flat = np.asarray(x, np.float32).reshape(len(x), -1)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{source}: features are not numeric ({err})") from None
    if not np.isfinite(flat).all():
        bad = int(np.argwhere(~np.isfinite(flat))[0, 0])
        raise DatasetError(f"{source}: sample {bad} has a NaN or infinite feature")
    return flat


def _read_npz(path: Path) -> Labelled:
    arrays = read_npz(path, "data file")
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path} lacks array(s) {', '.join(missing)}; it holds {sorted(arrays)} "
            "(expected x, y and optionally client)"
        )
    x, y, clients = arrays["x"], arrays["y"], arrays.get("client")
    if x.ndim < 1:
        raise DatasetError(f"{path}: x is a single number, expected one row per sample")
    for name, a in (("y", y), ("client", clients)):
        if a is not None and a.shape != (len(x),):
            raise DatasetError(f"{path}: {name} has shape {a.shape}, expected ({len(x)},)")
    return Labelled(_features(x, str(path)), y, clients)


def _read_csv(path: Path, label_column: str, client_column: str) -> Labelled:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path} is not a readable CSV file ({err})") from None
    if len(rows) < 2:
        raise DatasetError(f"{path}: expected a header row and at least one sample")
    header = [h.strip() for h in rows[0]]
    for role, name in (("label", label_column), ("client", client_column)):
        if name and name not in header:
            raise DatasetError(
                f"{path}: no {role} column {name!r} (data.{role}-column); the header has {header}"
            )
    special = {label_column, client_column} - {""}
    feature = [i for i, h in enumerate(header) if h not in special]
    if not feature:
        raise DatasetError(f"{path}: no feature columns besides {sorted(special)}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(
                f"{path}, line {line}: {len(row)} fields, the header has {len(header)}"
            )
    cells = np.char.strip(np.array(rows[1:], dtype=str))
    try:  # one vectorised conversion; the loop below only finds the culprit
        values = cells[:, feature].astype(np.float32)
    except ValueError:
        for line, row in enumerate(cells[:, feature], start=2):
            for value, i in zip(row, feature, strict=True):
                try:
                    float(value)
                except ValueError:
                    raise DatasetError(
                        f"{path}, line {line}, column {header[i]!r}: {str(value)!r} is not a number"
                    ) from None
        raise
    labels = cells[:, header.index(label_column)]
    clients = cells[:, header.index(client_column)] if client_column else None
    return Labelled(_features(values, str(path)), _numeric_if_possible(labels), clients)


def _numeric_if_possible(labels: np.ndarray) -> np.ndarray:
    """CSV labels as integers when they all are ('10' sorts after '9'), else as strings."""
    try:
        as_int = labels.astype(np.int64)
    except ValueError:
        return labels
    return as_int if np.array_equal(as_int.astype(str), labels) else labels


def _read_idx(samples: Path, labels: Path) -> Labelled:
    x, y = (_idx(p) for p in (samples, labels))
    if y.ndim != 1 or len(x) != len(y):
        raise DatasetError(
            f"{labels}: expected one label per sample of {samples} ({len(x)}), got shape {y.shape}"
        )
    return Labelled(_features(x, str(samples)) / np.float32(255), y.astype(np.int64), None)


def _idx(path: Path) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path} is not readable ({err})") from None
    return parse_idx(raw, str(path))


def load_files(
    train: str,
    test: str = "",
    *,
    label_column: str = "label",
    client_column: str = "",
    test_fraction: float = 0.2,
    rng: np.random.Generator | None = None,
) -> Dataset:
    """A :class:`Dataset` from file specs; without ``test``, ``test_fraction`` of the train
    file (drawn with ``rng``) is held out as the server's test set."""
    tr = read_labelled(train, label_column, client_column)
    if test:
        te = read_labelled(test, label_column, client_column)
    else:
        if rng is None:
            raise ValueError("load_files: holding out a test set needs an rng")
        order = rng.permutation(len(tr.labels))
        cut = round(test_fraction * len(order))
        if cut < 1 or cut >= len(order):
            raise DatasetError(
                f"{train}: {len(order)} samples cannot hold out data.test-fraction = "
                f"{test_fraction}; give data.test-file"
            )
        te, tr = (_take(tr, order[:cut]), _take(tr, order[cut:]))
    if tr.x.shape[1] != te.x.shape[1]:
        raise DatasetError(
            f"{test}: {te.x.shape[1]} features per sample, the train file {train} has "
            f"{tr.x.shape[1]}"
        )
    classes = np.unique(tr.labels)
    unseen = np.setdiff1d(np.unique(te.labels), classes)
    if len(unseen):
        raise DatasetError(f"{test}: labels {unseen[:5].tolist()} do not occur in {train}")
    groups = None if tr.clients is None else np.unique(tr.clients, return_inverse=True)[1]
    return Dataset(
        name=Path(FileSpec.parse(train.split(",")[0]).path).name,
        x_train=tr.x,
        y_train=np.searchsorted(classes, tr.labels).astype(np.int64),
        x_test=te.x,
        y_test=np.searchsorted(classes, te.labels).astype(np.int64),
        num_classes=len(classes),
        groups_train=groups,
    )


def _take(s: Labelled, index: np.ndarray) -> Labelled:
    return Labelled(s.x[index], s.labels[index], None if s.clients is None else s.clients[index])
