"""Queries on a discrete Bayesian network: variable elimination, and brute-force enumeration
as its reference.

A network here is ``(cards, parents, cpts)``: variable ``i`` has ``cards[i]`` states, parents
``parents[i]`` and a CPT of shape ``(*cards[parents[i]], cards[i])`` (or flattened to
``(q, r)``); :class:`fedcore.datasets.networks.Network` and the learned state both give it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

Factor = tuple[tuple[int, ...], np.ndarray]  # variables, table with one axis per variable


def factors(
    cards: Sequence[int], parents: Sequence[Sequence[int]], cpts: Sequence[np.ndarray]
) -> list[Factor]:
    """One factor per CPT, over ``(*parents, child)``."""
    out = []
    for child, (ps, table) in enumerate(zip(parents, cpts, strict=True)):
        scope = (*ps, child)
        out.append((tuple(scope), np.asarray(table, np.float64).reshape([cards[v] for v in scope])))
    return out


def _reduce(factor: Factor, evidence: Mapping[int, int]) -> Factor:
    scope, table = factor
    at = tuple(evidence.get(v, slice(None)) for v in scope)
    return tuple(v for v in scope if v not in evidence), table[at]


def _product(fs: list[Factor], keep: Sequence[int]) -> Factor:
    """The product of ``fs`` summed over every variable not in ``keep`` (one einsum)."""
    operands: list = []
    for scope, table in fs:
        operands += [table, list(scope)]
    return tuple(keep), np.einsum(*operands, list(keep))


def _merged_size(fs: list[Factor], v: int, cards: Sequence[int]) -> int:
    """The size of the factor that summing ``v`` out of ``fs`` would make."""
    scope = set().union(*(s for s, _ in fs if v in s))
    return int(np.prod([cards[u] for u in scope]))


def variable_elimination(
    cards: Sequence[int],
    parents: Sequence[Sequence[int]],
    cpts: Sequence[np.ndarray],
    targets: Sequence[int],
    evidence: Mapping[int, int] | None = None,
) -> np.ndarray:
    """``P(targets | evidence)``, shape ``[cards[t] for t in targets]``: the CPT factors
    reduced by the evidence, the other variables summed out one at a time in the greedy
    min-size order (the variable whose merged factor is smallest first). ValueError if the
    evidence has probability zero."""
    evidence = dict(evidence or {})
    if set(targets) & set(evidence):
        raise ValueError("a variable cannot be both a target and evidence")
    fs = [_reduce(f, evidence) for f in factors(cards, parents, cpts)]
    hidden = set(range(len(cards))) - set(targets) - set(evidence)
    while hidden:
        v = min(sorted(hidden), key=lambda u, fs=fs: _merged_size(fs, u, cards))
        touching = [f for f in fs if v in f[0]]
        keep = sorted(set().union(*(s for s, _ in touching)) - {v})
        fs = [f for f in fs if v not in f[0]] + [_product(touching, keep)]
        hidden.discard(v)
    _, joint = _product(fs, list(targets))
    total = joint.sum()
    if not total > 0:
        raise ValueError("the evidence has probability zero under the network")
    return joint / total


def enumerate_query(
    cards: Sequence[int],
    parents: Sequence[Sequence[int]],
    cpts: Sequence[np.ndarray],
    targets: Sequence[int],
    evidence: Mapping[int, int] | None = None,
) -> np.ndarray:
    """:func:`variable_elimination`'s answer by summing the full joint over every
    configuration (exponential: small networks only, the reference in tests)."""
    evidence = dict(evidence or {})
    tables = factors(cards, parents, cpts)
    out = np.zeros([cards[t] for t in targets])
    for x in itertools.product(*(range(c) for c in cards)):
        if any(x[v] != s for v, s in evidence.items()):
            continue
        p = 1.0
        for scope, table in tables:
            p *= table[tuple(x[v] for v in scope)]
        out[tuple(x[t] for t in targets)] += p
    return out / out.sum()


def log_likelihood(
    records: np.ndarray,
    parents: Sequence[Sequence[int]],
    cpts: Sequence[np.ndarray],
    cards: Sequence[int],
    floor: float = 1e-12,
) -> float:
    """The mean log-likelihood of ``records`` under the network, each probability floored at
    ``floor`` (a maximum-likelihood CPT gives unseen states probability zero)."""
    total = np.zeros(len(records))
    for scope, table in factors(cards, parents, cpts):
        total += np.log(np.maximum(table[tuple(records[:, v] for v in scope)], floor))
    return float(total.mean()) if len(records) else float("nan")
