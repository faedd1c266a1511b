"""The Planetoid citation graphs (Cora, CiteSeer, PubMed) in their upstream format.

Files ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` from the Planetoid repository
(Yang, Cohen and Salakhutdinov 2016): Python 2 pickles of scipy sparse features, one-hot labels
and an adjacency dict, plus the test node ids. A pickle can run code when loaded, so they are
read with :class:`RestrictedUnpickler`, which admits only the numpy, scipy.sparse and
collections classes these files hold, and only after each has matched its pinned sha256
(:data:`SHA256`). The split is the standard one: the first
``len(y)`` nodes train (140 for Cora), the next 500 validate, the ``test.index`` nodes test.
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError
from fedcore.datasets.files import download_file, missing_error, missing_files, verify_sha256

NAMES = ("cora", "citeseer", "pubmed")
# (features, classes, nodes) of each graph: a file whose arrays disagree is refused, not
# trained on (a structurally bogus file used to train to accuracy 0 and exit 0)
SHAPES: dict[str, tuple[int, int, int]] = {
    "cora": (1433, 7, 2708),
    "citeseer": (3703, 6, 3327),
    "pubmed": (500, 3, 19717),
}
VALIDATION_NODES = 500  # the standard split's validation nodes follow the training nodes
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
# Cora's digests are those of the shared reference copy. CiteSeer's and PubMed's are not
# checked here against the files (not available offline): they are the values three unrelated
# public loaders pin for these upstream files, which agree on all sixteen and, where they list
# Cora too, on Cora's digests above. A wrong pin fails closed (a mismatch error), never open.
SHA256: dict[str, dict[str, str]] = {
    "cora": {
        "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
        "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    },
    "citeseer": {
        "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "ind.citeseer.test.index": (
            "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"
        ),
        "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    },
    "pubmed": {
        "ind.pubmed.allx": "508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e",
        "ind.pubmed.ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
        "ind.pubmed.graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
        "ind.pubmed.test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
        "ind.pubmed.tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
        "ind.pubmed.ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
        "ind.pubmed.x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
        "ind.pubmed.y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    },
}


_REMEDY = (
    "delete it and load with download=True (CLI: --set data.download=true) to fetch the "
    "published file, or put the Planetoid repository's original file there"
)


@functools.cache
def _allowed() -> dict[tuple[str, str], object]:
    """The globals a Planetoid pickle may name (Python 2 and 3 spellings), each mapped to the
    object to build, taken from its current home (no deprecated module is imported)."""
    import collections

    import scipy.sparse

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array _reconstruct
    out: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("collections", "defaultdict"): collections.defaultdict,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for module in ("__builtin__", "builtins"):
        out |= {(module, "list"): list, (module, "dict"): dict, (module, "set"): set}
    for kind in ("csr", "csc", "lil", "coo"):
        cls = getattr(scipy.sparse, f"{kind}_matrix")
        out |= {
            (f"scipy.sparse.{kind}", cls.__name__): cls,
            (f"scipy.sparse._{kind}", cls.__name__): cls,
        }
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only the classes Planetoid files contain; any other global
    (``os.system``, ``builtins.eval``...) is refused before it can run."""

    def find_class(self, module: str, name: str):
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to unpickle {module}.{name}: Planetoid files hold only numpy, "
                f"scipy.sparse and collections objects (is the file tampered with?)"
            ) from None


def restricted_load(data: bytes) -> object:
    """Unpickle Python-2 ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


@dataclass(frozen=True)
class Graph:
    """A node-classification graph with the standard split.

    Attributes:
        x: node features, float32 (N, F).
        y: class of each node, int64 (N,).
        edges: undirected edges, int64 (2, E), each once with ``edges[0] < edges[1]``.
        train, val, test: node ids of the standard split.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    edges: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1


def parse_planetoid(name: str, blobs: dict[str, bytes]) -> Graph:
    """The graph ``name`` from the bytes of its files (``blobs[part]`` for each of
    :data:`PARTS`), each checked against the graph's shape (:data:`SHAPES`): a malformed
    or structurally bogus file raises :class:`DatasetError` naming the part and what is
    wrong, instead of a TypeError, a MemoryError or a model trained on garbage."""
    features, classes, nodes = SHAPES[name]
    raw = {part: _unpickle(name, part, blobs[part]) for part in PARTS if part != "test.index"}
    test_ids = _test_index(name, blobs["test.index"], nodes)
    x, tx, allx = (_matrix(name, p, raw[p], features, _finite_floats) for p in ("x", "tx", "allx"))
    y, ty, ally = (_matrix(name, p, raw[p], classes, _one_hot) for p in ("y", "ty", "ally"))
    _same_rows(name, ("x", x), ("y", y))
    _same_rows(name, ("tx", tx), ("ty", ty), ("test.index", test_ids))
    _same_rows(name, ("allx", allx), ("ally", ally))
    if len(y) < 1 or (y.sum(axis=1) != 1).any() or (y.sum(axis=0) == 0).any():
        raise _bogus(
            name,
            "y",
            f"every training node needs one label, and each of the {classes} "
            "classes a training node",
        )
    for part, labels in (("ty", ty), ("ally", ally)):
        if not labels.any():
            raise _bogus(name, part, "no node has a label")
    if len(y) + VALIDATION_NODES > len(allx) or test_ids.min() < len(allx):
        raise _bogus(
            name,
            "test.index",
            f"the {len(y)} training and {VALIDATION_NODES} validation nodes must precede the "
            f"test nodes within allx's {len(allx)} rows",
        )
    if max(len(allx) + len(tx), int(test_ids.max()) + 1) != nodes:
        raise _bogus(name, "allx", f"the parts do not add up to the graph's {nodes} nodes")
    graph = raw["graph"]
    if not isinstance(graph, dict) or not all(
        _node_id(u) and isinstance(vs, list | tuple | set) and all(map(_node_id, vs))
        for u, vs in graph.items()
    ):
        raise _bogus(name, "graph", "expected a dict of node id -> list of node ids")
    dense = {"y": y, "tx": tx, "ty": ty, "allx": allx, "ally": ally}
    return _assemble(name, raw | dense, test_ids)


def _bogus(name: str, part: str, what: str) -> DatasetError:
    return DatasetError(f"ind.{name}.{part} is not a Planetoid {name} file: {what}. {_REMEDY}")


def _unpickle(name: str, part: str, data: bytes) -> object:
    try:
        return restricted_load(data)
    except DatasetError as err:  # a global no Planetoid file names
        raise _bogus(name, part, str(err)) from None
    # The bytes are untrusted: whatever the unpickler fails with (a truncated stream, a
    # wrong opcode, a constructor given the wrong arguments, a claimed size it cannot
    # allocate) means the file is not a Planetoid pickle.
    except Exception as err:
        raise _bogus(name, part, f"unreadable pickle ({type(err).__name__}: {err})") from None


def _test_index(name: str, data: bytes, nodes: int) -> np.ndarray:
    if not data.strip():
        raise _bogus(name, "test.index", "it is empty")
    try:
        ids = np.loadtxt(io.BytesIO(data), dtype=np.int64, ndmin=1)
    except (ValueError, OverflowError) as err:
        raise _bogus(name, "test.index", f"not one integer per line ({err})") from None
    if ids.ndim != 1 or len(ids) == 0 or ids.min() < 0 or ids.max() >= nodes:
        raise _bogus(name, "test.index", f"expected node ids in [0, {nodes}), one per line")
    if len(np.unique(ids)) != len(ids):
        raise _bogus(name, "test.index", "a node id occurs twice")
    return ids


def _finite_floats(a: np.ndarray) -> bool:
    """Features must be finite."""
    return bool(np.isfinite(a).all())


def _one_hot(a: np.ndarray) -> bool:
    """Labels must be rows of zeros and ones with at most one one."""  # (CiteSeer: zero rows)
    return bool(np.isin(a, (0, 1)).all() and (a.sum(axis=1) <= 1).all())


def _matrix(name: str, part: str, value: object, columns: int, valid) -> np.ndarray:
    """``value`` as a dense float (rows, ``columns``) array passing ``valid``; a sparse
    matrix's claimed shape and its indices are checked before it is made dense."""
    kind = "features" if valid is _finite_floats else "one-hot labels"
    bad = _bogus(name, part, f"expected a matrix of {columns} columns of {kind}")
    import scipy.sparse  # (not at import time: every process parses the config)

    try:
        if scipy.sparse.issparse(value):
            rows, cols = value.shape
            if cols != columns or rows > SHAPES[name][2]:
                raise bad
            if hasattr(value, "check_format"):  # csr, csc: indices within the shape
                value.check_format(full_check=True)
            elif hasattr(value, "_check"):  # coo
                value._check()
        raw = np.asarray(_dense(value))
        if raw.dtype.kind not in "biuf":  # complex, text, objects: no silent cast
            raise _bogus(name, part, f"{kind} of dtype {raw.dtype}, not real numbers")
        dense = raw.astype(np.float64)
    except DatasetError:
        raise
    except (TypeError, ValueError, IndexError, AttributeError, MemoryError) as err:
        raise _bogus(name, part, f"not a numeric matrix ({type(err).__name__}: {err})") from None
    if dense.ndim != 2 or dense.shape[1] != columns:
        raise _bogus(name, part, f"expected {columns} columns of {kind}, got shape {dense.shape}")
    if not valid(dense):
        raise _bogus(name, part, valid.__doc__.rstrip("."))
    return dense


def _same_rows(name: str, *parts: tuple[str, np.ndarray]) -> None:
    rows = {p: len(a) for p, a in parts}
    if len(set(rows.values())) != 1:
        shown = ", ".join(f"{p} {n}" for p, n in rows.items())
        raise _bogus(name, parts[0][0], f"its parts disagree on the number of nodes ({shown})")


def _node_id(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0


def _dense(matrix: object) -> np.ndarray:
    return np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix)


def load_planetoid(name: str, data_dir: Path, *, download: bool = False) -> Graph:
    """Read ``data_dir/planetoid/ind.<name>.*`` (fetching missing files if ``download``),
    each checked against its pinned sha256 before it is read."""
    if name not in NAMES:
        raise ValueError(f"unknown Planetoid graph {name!r}; expected one of {NAMES}")
    folder = Path(data_dir) / "planetoid"
    files = [f"ind.{name}.{part}" for part in PARTS]
    pinned = SHA256.get(name)
    if not pinned:  # every graph is pinned; a new one must be before its files are read
        raise DatasetError(
            f"no pinned sha256 for {name}, so its files are neither downloaded nor read "
            f"unverified; add the digests of {', '.join(files)} to "
            f"fedcore.datasets.planetoid.SHA256"
        )
    missing = missing_files(folder, files)
    if missing and download:
        for path in missing:
            download_file(path.name, folder, pinned[path.name], [URL])
        missing = []
    if missing:
        raise missing_error(f"planetoid ({name})", missing, downloadable=True)
    for file in files:  # before any file is unpickled
        verify_sha256(folder / file, pinned[file], remedy=_REMEDY)
    return parse_planetoid(name, {p: (folder / f"ind.{name}.{p}").read_bytes() for p in PARTS})


def _assemble(name: str, raw: dict, test_ids: np.ndarray) -> Graph:
    allx, tx = _dense(raw["allx"]), _dense(raw["tx"])
    ally, ty = np.asarray(raw["ally"]), np.asarray(raw["ty"])
    test_sorted = np.sort(test_ids)
    num_nodes = max(len(allx) + len(tx), int(test_sorted[-1]) + 1)
    # CiteSeer has isolated test nodes missing from tx: they get zero features and no label
    x = np.zeros((num_nodes, allx.shape[1]), np.float32)
    labels = np.zeros((num_nodes, ally.shape[1]), np.float32)
    x[: len(allx)], labels[: len(ally)] = allx, ally
    x[test_ids], labels[test_ids] = tx, ty  # tx row k is node test_ids[k] (file order)
    y = labels.argmax(axis=1).astype(np.int64)
    pairs = {
        (min(u, v), max(u, v))
        for u, neighbours in dict(raw["graph"]).items()
        for v in neighbours
        if u != v and u < num_nodes and v < num_nodes
    }
    edges = np.array(sorted(pairs), np.int64).T.reshape(2, -1)
    n_train = len(np.asarray(raw["y"]))
    return Graph(
        name=name,
        x=x,
        y=y,
        edges=edges,
        train=np.arange(n_train),
        val=np.arange(n_train, n_train + VALIDATION_NODES),
        test=test_ids,
    )
