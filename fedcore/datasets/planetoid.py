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
    raw = {
        part: restricted_load((folder / f"ind.{name}.{part}").read_bytes())
        for part in PARTS
        if part != "test.index"
    }
    test_ids = np.loadtxt(folder / f"ind.{name}.test.index", dtype=np.int64)
    return _assemble(name, raw, test_ids)


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
        val=np.arange(n_train, n_train + 500),
        test=test_ids,
    )
