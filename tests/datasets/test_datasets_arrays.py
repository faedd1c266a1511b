"""Bring your own data: NPZ, CSV and IDX files become a Dataset, and a federated run."""

import gzip
import hashlib
import json
import struct

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedcore.config import ConfigError, parse_config
from fedcore.datasets import DatasetError
from fedcore.datasets.arrays import load_files
from simulations import runner


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float32) / 16, d.target


def _csv(path, x, y, clients=None, label="label"):
    header = (
        [f"f{i}" for i in range(x.shape[1])] + [label] + (["site"] if clients is not None else [])
    )
    lines = [",".join(header)]
    for i, row in enumerate(x):
        extra = [str(y[i])] + ([str(clients[i])] if clients is not None else [])
        lines.append(",".join([f"{v:.6g}" for v in row] + extra))
    path.write_text("\n".join(lines) + "\n")
    return path


def _idx(path, array, compress=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_npz_with_natural_clients(tmp_path, digits):
    x, y = digits
    np.savez(tmp_path / "train.npz", x=x[:1000], y=y[:1000], client=np.arange(1000) % 7)
    np.savez(tmp_path / "test.npz", x=x[1000:], y=y[1000:])
    ds = load_files(str(tmp_path / "train.npz"), str(tmp_path / "test.npz"))
    np.testing.assert_array_equal(ds.x_train, x[:1000])
    np.testing.assert_array_equal(ds.y_train, y[:1000])
    assert ds.num_classes == 10 and len(np.unique(ds.groups_train)) == 7


def test_csv_with_string_labels_and_a_client_column(tmp_path, digits):
    x, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "8", "9"])
    path = _csv(tmp_path / "d.csv", x[:300], names[y[:300]], clients=y[:300] % 3, label="kind")
    ds = load_files(
        str(path), label_column="kind", client_column="site", rng=np.random.default_rng(0)
    )
    assert ds.num_features == 64 and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 300 and len(ds.y_test) == 60
    classes = np.unique(names)  # sorted: '8' < '9' < 'eight'... as strings
    train = np.sort(np.concatenate([ds.y_train, ds.y_test]))
    np.testing.assert_array_equal(train, np.sort(np.searchsorted(classes, names[y[:300]])))


def test_integer_csv_labels_keep_their_numeric_order(tmp_path):
    x = np.arange(24, dtype=float).reshape(12, 2)
    y = np.array([2, 10, 9] * 4)
    ds = load_files(str(_csv(tmp_path / "a.csv", x, y)), str(_csv(tmp_path / "b.csv", x, y)))
    np.testing.assert_array_equal(ds.y_train, np.searchsorted([2, 9, 10], y))


def test_idx_pairs_plain_and_gzipped_are_scaled_to_unit_range(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 4, 4))
    labels = np.arange(20) % 3
    train = f"{_idx(tmp_path / 'x-idx3-ubyte', images)},{_idx(tmp_path / 'y-idx1-ubyte', labels)}"
    test = (
        f"{_idx(tmp_path / 'tx-idx3-ubyte.gz', images, True)},"
        f"{_idx(tmp_path / 'ty-idx1-ubyte.gz', labels, True)}"
    )
    ds = load_files(train, test)
    np.testing.assert_allclose(ds.x_train, images.reshape(20, 16) / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.x_test, ds.x_train)


def test_a_pinned_sha256_is_checked(tmp_path, digits):
    x, y = digits
    path = tmp_path / "t.npz"
    np.savez(path, x=x[:50], y=y[:50])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    load_files(f"{path}#sha256={digest}", f"{path}#sha256={digest}")
    wrong = "0" * 64
    with pytest.raises(DatasetError, match=f"sha256 is {digest}, expected {wrong}"):
        load_files(f"{path}#sha256={wrong}", str(path))
    with pytest.raises(DatasetError, match="pinned only as"):
        load_files(f"{path}#md5=abc", str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,label\n1,0\nx,1\n", r"line 3, column 'a': 'x' is not a number"),
        ("a,label\n1,0\n2\n", "line 3: 1 fields, the header has 2"),
        ("a,b\n1,0\n", "no label column 'label'"),
        ("label\n0\n1\n", "no feature columns"),
        ("a,label\n", "at least one sample"),
        ("a,label\nnan,0\n1,1\n", "sample 0 has a NaN or infinite feature"),
    ],
)
def test_a_bad_csv_is_refused_naming_the_place(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_files(str(path), str(path))


def test_bad_files_are_refused_naming_the_problem(tmp_path, digits):
    x, y = digits
    np.savez(tmp_path / "noy.npz", x=x[:10])
    np.savez(tmp_path / "ok.npz", x=x[:10], y=y[:10])
    np.savez(tmp_path / "narrow.npz", x=x[:10, :8], y=y[:10])
    np.savez(tmp_path / "new-label.npz", x=x[:10], y=y[:10] + 100)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    cases = [
        (tmp_path / "missing.csv", "ok.npz", "missing.csv not found"),
        (tmp_path / "noy.npz", "ok.npz", r"lacks array\(s\) y"),
        (tmp_path / "junk.npz", "ok.npz", "not a readable NPZ file"),
        (tmp_path / "ok.npz", "narrow.npz", "8 features per sample, the train file"),
        (tmp_path / "ok.npz", "new-label.npz", "labels .* do not occur in"),
        (tmp_path / "data.parquet", "ok.npz", "unknown format"),
    ]
    (tmp_path / "data.parquet").write_text("x")
    for train, test, message in cases:
        with pytest.raises(DatasetError, match=message):
            load_files(str(train), str(tmp_path / test))


def test_files_settings_are_checked_at_parse_time():
    with pytest.raises(ConfigError, match=r"reads data\.train-file"):
        parse_config({"data": {"dataset": "files"}})
    with pytest.raises(ConfigError, match=r"with data\.dataset = 'files' only"):
        parse_config({"data": {"train-file": "x.csv"}})


def test_a_csv_federates_under_secure_aggregation_and_client_level_dp(tmp_path, digits):
    """The user's own file, its natural clients, and the privacy stack, with no code."""
    x, y = digits
    path = _csv(tmp_path / "digits.csv", x, y, clients=np.arange(len(y)) % 6)
    cfg = parse_config(
        {
            "data": {
                "dataset": "files",
                "train-file": str(path),
                "client-column": "site",
                "partition": "natural",
                "num-clients": 6,
            },
            "model": {"hidden": [32]},
            "train": {"rounds": 3, "local-epochs": 1},
            "evaluate": {"fraction": 0.0},
            "secagg": {"mode": "full", "bound": 4.0},
            "privacy": {"dp": "distributed", "clip-norm": 1.0, "noise-multiplier": 0.3},
        }
    )
    run = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["round_status"]["aggregated"] == 3
    assert summary["final_metrics"]["train/secure-sum"] == 6
    assert summary["privacy"]["against_every_party"] > 0
