"""Count tables of families and what they give: CPTs and the BIC and BDeu scores.

A *family* is a child and its parent set, ``(child, parents)`` with the parents sorted. Its
count table ``N`` has shape ``(q, r)``: ``q`` joint parent states (row-major over the
parents' cards, in the order of ``parents``) by the child's ``r`` states. Count tables add
up over clients, so the sum of the clients' tables is the pooled data's table: every
quantity here is a function of the pooled counts only, which is why the federated learner
equals the centralized one (Friedman & Goldszmidt's sufficient statistics).

Counts that are not whole (client-level DP's noised sums) are taken as they are, with the
negative ones set to zero: post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.special import gammaln

Family = tuple[int, tuple[int, ...]]


def family(child: int, parents: Iterable[int]) -> Family:
    """The canonical (sorted-parents) form of a family."""
    return int(child), tuple(sorted(int(p) for p in parents))


def table_shape(fam: Family, cards: Sequence[int]) -> tuple[int, int]:
    """``(q, r)`` of ``fam``'s count table."""
    child, parents = fam
    return math.prod(int(cards[p]) for p in parents), int(cards[child])


def family_counts(records: np.ndarray, fam: Family, cards: Sequence[int]) -> np.ndarray:
    """``fam``'s count table on ``records`` (``(n, V)`` state indices), int64 ``(q, r)``."""
    child, parents = fam
    q, r = table_shape(fam, cards)
    columns = [records[:, p] for p in (*parents, child)]
    dims = [int(cards[p]) for p in (*parents, child)]
    flat = np.ravel_multi_index(columns, dims) if len(records) else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=q * r).reshape(q, r)


def cpt(counts: np.ndarray, pseudo_count: float = 0.0) -> np.ndarray:
    """The CPT ``P(child | parents)`` of a ``(q, r)`` count table: ``(N_jk + a) / (N_j + r a)``
    with pseudo-count ``a`` (0: maximum likelihood; BDeu: ``ess / (q r)``). A parent state
    with no records (and ``a = 0``) gets the uniform row."""
    n = np.maximum(np.asarray(counts, np.float64), 0.0) + pseudo_count
    rows = n.sum(axis=1, keepdims=True)
    uniform = np.full_like(n, 1.0 / n.shape[1])
    return np.divide(n, rows, out=uniform, where=rows > 0)


def bdeu_pseudo_count(shape: tuple[int, int], ess: float) -> float:
    """BDeu's pseudo-count per cell of a ``(q, r)`` table: ``ess / (q r)``."""
    return ess / (shape[0] * shape[1])


def bic(counts: np.ndarray) -> float:
    """BIC of one family: ``sum N_jk log(N_jk / N_j) - log(N) / 2 * q (r - 1)``, N the
    table's total (Schwarz 1978; the decomposable form of pgmpy's and bnlearn's)."""
    n = np.maximum(np.asarray(counts, np.float64), 0.0)
    rows = n.sum(axis=1, keepdims=True)
    positive = n > 0
    ratio = np.divide(n, np.broadcast_to(rows, n.shape), out=np.ones_like(n), where=positive)
    loglik = float((n * np.log(ratio)).sum())
    total = float(n.sum())
    q, r = n.shape
    return loglik - 0.5 * math.log(max(total, 1.0)) * q * (r - 1)


def bdeu(counts: np.ndarray, ess: float) -> float:
    """BDeu of one family (Heckerman, Geiger & Chickering 1995): the log marginal likelihood
    under a Dirichlet prior with ``ess / (q r)`` per cell."""
    n = np.maximum(np.asarray(counts, np.float64), 0.0)
    q, r = n.shape
    a_j, a_jk = ess / q, ess / (q * r)
    rows = n.sum(axis=1)
    return float(
        (gammaln(a_j) - gammaln(a_j + rows)).sum() + (gammaln(a_jk + n) - gammaln(a_jk)).sum()
    )


def score(counts: np.ndarray, kind: str, ess: float) -> float:
    """The family's ``kind`` score ("bic" or "bdeu") from its count table."""
    if kind == "bic":
        return bic(counts)
    if kind == "bdeu":
        return bdeu(counts, ess)
    raise ValueError(f"unknown score {kind!r}; expected 'bic' or 'bdeu'")
