"""Fuzzing the third boundary: data files (issue 17).

Each loader gets files that are truncated, bit-flipped, of wrong headers, shapes, dtypes or
values: a node's ``.npz`` (``load_node_file``), your own NPZ and CSV files
(``read_labelled``), IDX bytes (``parse_idx``) and Planetoid pickles (``parse_planetoid``,
one part of Cora's real files damaged). The invariant: the loader's own
:class:`DatasetError`, or data that keeps the loader's documented contract (shapes, dtypes,
finite features, labels in range); never another exception, a hang or silent garbage.
``benchmarks/fuzz.py`` runs :data:`data_files` with more examples.
"""

from __future__ import annotations

import functools
import io
import pickle
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcore.datasets import DatasetError, resolve_data_dir
from fedcore.datasets.arrays import read_labelled
from fedcore.datasets.idx import parse_idx
from fedcore.datasets.movielens import load_movielens
from fedcore.datasets.node import SHAPES, load_node_file
from fedcore.datasets.planetoid import PARTS, parse_planetoid
from fedcore.datasets.planetoid import SHAPES as GRAPHS

MAX_EXAMPLES = 100
_DTYPES = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64]
)


def arrays(rows: st.SearchStrategy[int], columns: st.SearchStrategy[int]):
    """Arrays of any small shape and dtype, values extreme and non-finite included."""
    shape = st.one_of(
        st.tuples(rows, columns),
        st.tuples(rows),
        st.tuples(rows, columns, st.integers(1, 2)),
        st.just(()),
    )
    return _DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, shape))


def damage(raw: bytes) -> st.SearchStrategy[bytes]:
    """``raw`` truncated, with bytes flipped, or unchanged."""
    n = max(len(raw), 1)
    return st.one_of(
        st.just(raw),
        st.integers(0, n - 1).map(lambda i: raw[:i]),
        st.lists(st.integers(0, n - 1), min_size=1, max_size=3).map(
            lambda at: bytes(b ^ 0xFF if i in at else b for i, b in enumerate(raw))
        ),
    )


def _npz(named: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **named)
    return buffer.getvalue()


@st.composite
def node_files(draw) -> tuple[str, str, bytes]:
    dataset = draw(st.sampled_from(sorted(SHAPES)))
    features, classes = SHAPES[dataset]
    rows = st.integers(0, 6)
    cols = st.sampled_from([features, features, 1, features + 1])
    names = draw(
        st.lists(
            st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x", "other"]),
            min_size=0,
            max_size=5,
            unique=True,
        )
    )
    named = {}
    for name in names:
        if name.startswith("y"):
            named[name] = draw(
                st.one_of(
                    hnp.arrays(np.int64, st.tuples(rows), elements=st.integers(-1, classes)),
                    arrays(rows, cols),
                )
            )
        else:
            named[name] = draw(arrays(rows, cols))
    raw = draw(damage(_npz(named, draw(st.booleans()))))
    return "node", dataset, raw


@st.composite
def own_files(draw) -> tuple[str, str, bytes]:
    if draw(st.booleans()):
        named = {k: draw(arrays(st.integers(0, 6), st.integers(1, 4))) for k in ("x", "y")}
        if draw(st.booleans()):
            named["client"] = draw(arrays(st.integers(0, 6), st.integers(1, 2)))
        return "npz", "", draw(damage(_npz(named, draw(st.booleans()))))
    cell = st.one_of(
        st.sampled_from(["1", "0.5", "-3", "nan", "inf", "", "a", "1e999", " 2 ", '"x"']),
        st.text(max_size=3),
    )
    header = draw(st.lists(st.sampled_from(["label", "f1", "f2", "site", "", "label"]), max_size=4))
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=5), max_size=5))
    text = "\n".join(",".join(r) for r in [header, *rows])
    return "csv", "", draw(damage(text.encode("utf-8", "surrogatepass")))


@st.composite
def idx_files(draw) -> tuple[str, str, bytes]:
    dims = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    header = bytes([0, 0, draw(st.sampled_from([8, 8, 9])), len(dims)])
    header += b"".join(d.to_bytes(4, "big") for d in dims)
    body = bytes(draw(st.integers(0, 60)))
    return "idx", "", draw(damage(header + body))


@st.composite
def ratings_files(draw) -> tuple[str, str, bytes]:
    """MovieLens-1M ``ratings.dat`` lines (``user::item::rating::time``), which no sha256 pins."""
    number = st.one_of(
        st.integers(-2, 7).map(str), st.sampled_from(["", "x", "1.5", "99999999999999999999"])
    )
    line = st.lists(number, min_size=0, max_size=5).map("::".join)
    text = "\n".join(draw(st.lists(line, max_size=6)))
    return "ratings", "", draw(damage(text.encode()))


@functools.cache
def cora() -> dict[str, bytes] | None:
    folder = resolve_data_dir(None) / "planetoid"
    if not (folder / "ind.cora.x").is_file():
        return None
    return {part: (folder / f"ind.cora.{part}").read_bytes() for part in PARTS}


@st.composite
def planetoid_files(draw) -> tuple[str, str, bytes]:
    part = draw(st.sampled_from(PARTS))
    blobs = cora()
    if blobs is None:
        return "planetoid", part, b""
    if draw(st.booleans()) and part != "test.index":
        value = draw(arrays(st.integers(0, 3000), st.sampled_from([1433, 7, 3])))
        return "planetoid", part, pickle.dumps(value, protocol=4)
    raw = blobs[part]
    return "planetoid", part, draw(damage(raw[:4096] if draw(st.booleans()) else raw))


def data_files() -> st.SearchStrategy:
    """(loader, its argument, the file's bytes)."""
    return st.one_of(node_files(), own_files(), idx_files(), ratings_files(), planetoid_files())


def _keeps_the_contract(kind: str, arg: str, out: object) -> None:
    if kind == "node":
        features, classes = SHAPES[arg]
        for split in ("train", "test"):
            x, y = out[f"x_{split}"], out[f"y_{split}"]
            assert x.dtype == np.float32 and x.shape == (len(y), features)
            assert np.isfinite(x).all() and y.dtype == np.int64
            assert len(y) == 0 or 0 <= y.min() <= y.max() < classes
        assert len(out["y_train"]) > 0
    elif kind in ("npz", "csv"):
        assert out.x.ndim == 2 and out.x.dtype == np.float32 and np.isfinite(out.x).all()
        assert len(out.x) == len(out.labels) > 0
    elif kind == "idx":
        assert out.dtype == np.uint8
    elif kind == "ratings":
        assert len(out.users) > 0 and out.users.min() >= 0 and out.items.min() >= 0
        assert out.users.max() < out.num_users and out.items.max() < out.num_items
        assert ((out.ratings >= 1) & (out.ratings <= 5)).all()
    else:
        features, classes, nodes = GRAPHS["cora"]
        assert out.x.shape == (nodes, features) and np.isfinite(out.x).all()
        assert out.y.shape == (nodes,) and out.y.min() >= 0 and out.y.max() < classes
        assert out.edges.shape[0] == 2 and (out.edges < nodes).all() and (out.edges >= 0).all()
        assert (np.bincount(out.y[out.train], minlength=classes) > 0).all()


def check_data_file(case: tuple[str, str, bytes]) -> None:
    kind, arg, raw = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("data.csv" if kind == "csv" else "data.npz")
        path.write_bytes(raw)
        try:
            if kind == "node":
                out = load_node_file(path, arg)
            elif kind in ("npz", "csv"):
                out = read_labelled(str(path), "label", "site" if kind == "csv" else "")
            elif kind == "idx":
                out = parse_idx(raw, "data.idx")
            elif kind == "ratings":
                (Path(tmp) / "ml-1m").mkdir()
                (Path(tmp) / "ml-1m" / "ratings.dat").write_bytes(raw)
                out = load_movielens(Path(tmp), "ml-1m")
            elif cora() is None:
                return
            else:
                out = parse_planetoid("cora", cora() | {arg: raw})
        except DatasetError as err:
            assert str(err).strip()
            return
    _keeps_the_contract(kind, arg, out)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data_files())
def test_a_damaged_data_file_is_a_dataset_error_or_good_data(case):
    check_data_file(case)
