"""The standard discrete Bayesian networks (ASIA, SACHS, ALARM, CHILD) and records sampled
from them: the data of task ``bayesnet``.

The networks' definitions are the BIF files of the bnlearn repository that pgmpy ships in
its wheel (``pgmpy/utils/example_models/<name>.bif.gz``). They are read from the installed
package's folder, checked against a pinned SHA-256 and parsed here, so nothing imports pgmpy
(pandas, statsmodels) and nothing is downloaded: pgmpy's newer ``load_model`` fetches from a
hub, which a run must never do.

A :class:`Network` is plain arrays: variable ``i`` has ``cards[i]`` states, parents
``parents[i]`` and a CPT of shape ``(*cards[parents[i]], cards[i])`` whose last axis sums to
one. Records are ``(n, V)`` int64 state indices, forward-sampled in topological order from an
explicit generator.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore import seeding
from fedcore.datasets.base import DatasetError

# SHA-256 of each network's BIF text (decompressed), as pgmpy 1.1.2 ships it
CHECKSUMS = {
    "asia": "9f770c96940dc4d860b581602120790ac538983b30b28d38631b8184dc7b5f89",
    "sachs": "b7bd3931192f9e529f0f88bba15fca6cc61ba3c805d5c8ae57eba57ed3b332ec",
    "alarm": "701e6c561f71b55669070c29614f0724b761289aa2c4a35bcc97b638ee881fa2",
    "child": "432c22e661cd0e8235c8d95599ac22ccc261002459f5c4e6e7235b057908fe6e",
}


@dataclass(frozen=True, eq=False)
class Network:
    """A discrete Bayesian network.

    Attributes:
        name: the network's name.
        variables: the variables' names, in the BIF file's order.
        states: each variable's state names.
        parents: each variable's parents (variable indices), in the CPT's axis order.
        cpts: each variable's CPT, shape ``(*parent cards, card)``, rows summing to one.
    """

    name: str
    variables: tuple[str, ...]
    states: tuple[tuple[str, ...], ...]
    parents: tuple[tuple[int, ...], ...]
    cpts: tuple[np.ndarray, ...]

    @property
    def cards(self) -> np.ndarray:
        return np.array([len(s) for s in self.states], np.int64)

    @property
    def adjacency(self) -> np.ndarray:
        """``a[p, c] = 1`` for every edge parent -> child."""
        a = np.zeros((len(self.variables), len(self.variables)), np.int64)
        for child, ps in enumerate(self.parents):
            a[list(ps), child] = 1
        return a

    def index(self, variable: str) -> int:
        try:
            return self.variables.index(variable)
        except ValueError:
            raise KeyError(
                f"network {self.name!r} has no variable {variable!r}; it has "
                f"{', '.join(self.variables)}"
            ) from None


def topological_order(parents: tuple[tuple[int, ...], ...]) -> list[int]:
    """The variables, every parent before its children; ValueError on a cycle."""
    order, done, visiting = [], set(), set()

    def visit(v: int) -> None:
        if v in done:
            return
        if v in visiting:
            raise ValueError(f"the graph has a cycle through variable {v}")
        visiting.add(v)
        for p in parents[v]:
            visit(p)
        visiting.discard(v)
        done.add(v)
        order.append(v)

    for v in range(len(parents)):
        visit(v)
    return order


def sample(network: Network, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` records forward-sampled from ``network``: ``(n, V)`` int64 state indices."""
    records = np.zeros((n, len(network.variables)), np.int64)
    for v in topological_order(network.parents):
        cpt = network.cpts[v]
        ps = network.parents[v]
        rows = cpt[tuple(records[:, p] for p in ps)] if ps else np.broadcast_to(cpt, (n, len(cpt)))
        # inverse CDF per record; the clip guards against a last cumsum just under 1
        cdf = np.cumsum(rows, axis=1)
        u = rng.random(n)[:, None]
        records[:, v] = np.minimum((u >= cdf).sum(axis=1), cpt.shape[-1] - 1)
    return records


_VARIABLE = re.compile(r"variable\s+(\S+)\s*\{\s*type\s+discrete\s*\[\s*(\d+)\s*\]\s*\{([^}]*)\}")
_PROBABILITY = re.compile(r"probability\s*\(\s*([^)|]+?)\s*(?:\|\s*([^)]*))?\)\s*\{([^}]*)\}")
_ROW = re.compile(r"\(([^)]*)\)\s*([^;]*);")
_TABLE = re.compile(r"table\s+([^;]*);")


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_bif(text: str, name: str) -> Network:
    """The network in BIF ``text`` (discrete variables; each CPT as one ``table`` or as one
    row per parent configuration, which may come in any order). Rows are renormalised: the
    published files round to a few digits (ALARM's 0.3333333 thirds)."""
    variables, states = [], []
    for match in _VARIABLE.finditer(text):
        variables.append(match[1])
        states.append(tuple(_names(match[3])))
        if len(states[-1]) != int(match[2]):
            raise DatasetError(f"{name}: variable {match[1]} lists {match[3]!r}, not {match[2]}")
    index = {v: i for i, v in enumerate(variables)}
    parents: list[tuple[int, ...] | None] = [None] * len(variables)
    cpts: list[np.ndarray | None] = [None] * len(variables)
    for match in _PROBABILITY.finditer(text):
        child, ps = index[match[1].strip()], tuple(index[p] for p in _names(match[2] or ""))
        shape = (*(len(states[p]) for p in ps), len(states[child]))
        cpt = np.full(shape, np.nan)
        table = _TABLE.search(match[3])
        if table is not None:
            cpt = np.array([float(x) for x in _names(table[1])]).reshape(shape)
        for row in _ROW.finditer(match[3]):
            at = tuple(states[p].index(s) for p, s in zip(ps, _names(row[1]), strict=True))
            cpt[at] = [float(x) for x in _names(row[2])]
        if np.isnan(cpt).any() or (cpt < 0).any():
            raise DatasetError(f"{name}: the CPT of {match[1]} is incomplete or negative")
        parents[child], cpts[child] = ps, cpt / cpt.sum(axis=-1, keepdims=True)
    missing = [variables[i] for i, c in enumerate(cpts) if c is None]
    if missing or not variables:
        raise DatasetError(f"{name}: no CPT for {', '.join(missing) or 'any variable'}")
    network = Network(name, tuple(variables), tuple(states), tuple(parents), tuple(cpts))
    topological_order(network.parents)  # a cycle is a corrupt file
    return network


def bif_path(name: str) -> Path:
    """Where the installed pgmpy keeps network ``name``'s BIF file (pgmpy is not imported)."""
    spec = importlib.util.find_spec("pgmpy")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"network {name!r} is read from the BIF files in the pgmpy wheel, and pgmpy is "
            "not installed: pip install pgmpy==1.1.2"
        )
    return Path(spec.submodule_search_locations[0]) / "utils" / "example_models" / f"{name}.bif.gz"


@functools.lru_cache(maxsize=8)
def load_network(name: str) -> Network:
    """Network ``name`` (one of :data:`CHECKSUMS`), checked against its pinned checksum."""
    if name not in CHECKSUMS:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(CHECKSUMS)}")
    path = bif_path(name)
    try:
        raw = gzip.decompress(path.read_bytes())
    except OSError as err:
        raise DatasetError(f"cannot read network {name!r} from {path}: {err}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CHECKSUMS[name]:
        raise DatasetError(
            f"{path} has SHA-256 {digest}, not the pinned {CHECKSUMS[name]} (pgmpy 1.1.2's)"
        )
    return parse_bif(raw.decode("utf-8"), name)


def sample_records(name: str, n: int, seed: int, stream: int) -> np.ndarray:
    """``n`` records of network ``name`` from the run's ``seed`` on its own ``stream`` of
    :mod:`fedcore.seeding` (the clients' records and the server's test records differ)."""
    return sample(load_network(name), n, seeding.numpy_rng(seed, seeding.PARTITION, stream))
