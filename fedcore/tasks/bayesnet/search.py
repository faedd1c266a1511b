"""Greedy hill climbing over DAGs with a decomposable score, one step at a time.

Each step scores every legal move from the current DAG (add, remove or reverse one edge,
no cycle, at most ``max_parents`` parents) by the change of the families it touches and
takes the best strictly improving one (ties: the first in the order of :func:`moves`). A
move's change needs the scores of at most four families (:func:`move_families`), so a step
needs only the family scores :func:`needed_families` lists, and a learner that has those
scores takes the same step whether they came from pooled records or from securely summed
count tables: :func:`hill_climb` is the pooled reference the federated server hook follows.

A DAG is an adjacency matrix: ``adj[p, c] = 1`` for the edge p -> c.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from fedcore.tasks.bayesnet.families import Family, family

ADD, REMOVE, REVERSE = "add", "remove", "reverse"
MIN_GAIN = 1e-9  # a move must improve the score by more than this (float noise is no gain)


@dataclass(frozen=True)
class Move:
    """One edit of the DAG: ``kind`` applied to the edge ``source -> target``."""

    kind: str
    source: int
    target: int


def reachability(adj: np.ndarray) -> np.ndarray:
    """``reach[a, b]``: a directed path of one or more edges leads from a to b (Warshall)."""
    reach = adj.astype(bool)
    for k in range(len(adj)):
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    return reach


def parents_of(adj: np.ndarray, child: int) -> tuple[int, ...]:
    return tuple(int(p) for p in np.flatnonzero(adj[:, child]))


def moves(adj: np.ndarray, max_parents: int) -> Iterator[Move]:
    """The legal moves from ``adj``, in a fixed order (source, then target)."""
    reach = reachability(adj)
    indegree = adj.sum(axis=0)
    n = len(adj)
    for u in range(n):
        for v in range(n):
            if u == v:
                continue
            if adj[u, v]:
                yield Move(REMOVE, u, v)
                # reversing u -> v makes a cycle iff another path leads from u to v
                others = [w for w in np.flatnonzero(adj[u]) if w != v]
                if indegree[u] < max_parents and not any(reach[w, v] for w in others):
                    yield Move(REVERSE, u, v)
            elif not adj[v, u] and indegree[v] < max_parents and not reach[v, u]:
                yield Move(ADD, u, v)


def move_families(adj: np.ndarray, move: Move) -> list[tuple[Family, Family]]:
    """The (old, new) families a move changes: one for add and remove, two for reverse."""
    u, v = move.source, move.target
    pv, pu = set(parents_of(adj, v)), set(parents_of(adj, u))
    if move.kind == ADD:
        return [(family(v, pv), family(v, pv | {u}))]
    if move.kind == REMOVE:
        return [(family(v, pv), family(v, pv - {u}))]
    return [(family(v, pv), family(v, pv - {u})), (family(u, pu), family(u, pu | {v}))]


def current_families(adj: np.ndarray) -> list[Family]:
    """The DAG's own families, one per variable."""
    return [family(c, parents_of(adj, c)) for c in range(len(adj))]


def needed_families(adj: np.ndarray, max_parents: int) -> list[Family]:
    """Every family whose score one step from ``adj`` needs, sorted."""
    needed = set(current_families(adj))
    for move in moves(adj, max_parents):
        needed.update(new for _, new in move_families(adj, move))
    return sorted(needed)


def best_move(
    adj: np.ndarray, scores: Mapping[Family, float], max_parents: int
) -> tuple[Move, float] | None:
    """The best strictly improving move and its gain, or None at a local optimum. KeyError
    if ``scores`` lacks a family :func:`needed_families` lists."""
    best: tuple[Move, float] | None = None
    for move in moves(adj, max_parents):
        gain = sum(scores[new] - scores[old] for old, new in move_families(adj, move))
        if gain > MIN_GAIN and (best is None or gain > best[1]):
            best = (move, gain)
    return best


def apply(adj: np.ndarray, move: Move) -> np.ndarray:
    """The DAG after ``move`` (a new array)."""
    out = adj.copy()
    u, v = move.source, move.target
    out[u, v] = 1 if move.kind == ADD else 0
    if move.kind == REVERSE:
        out[v, u] = 1
    return out


def hill_climb(
    num_variables: int,
    score_of: Callable[[Family], float],
    max_parents: int,
    max_steps: int,
) -> tuple[np.ndarray, list[Move]]:
    """Hill climbing from the empty graph with the family scores ``score_of`` (the pooled
    reference): the final DAG and the moves taken, at most ``max_steps``."""
    adj = np.zeros((num_variables, num_variables), np.int64)
    scores: dict[Family, float] = {}
    steps: list[Move] = []
    while len(steps) < max_steps:
        for fam in needed_families(adj, max_parents):
            if fam not in scores:
                scores[fam] = score_of(fam)
        found = best_move(adj, scores, max_parents)
        if found is None:
            break
        adj = apply(adj, found[0])
        steps.append(found[0])
    return adj, steps


def shd(learned: np.ndarray, true: np.ndarray) -> int:
    """Structural Hamming distance between two DAGs: the pairs of variables whose edge
    differs (missing, extra or reversed; one each). Tsamardinos et al. 2006 define it on
    PDAGs (equivalence classes); on DAGs a reversal inside a class counts too."""
    a, b = learned.astype(bool), true.astype(bool)
    differs = (a != b) | (a.T != b.T)
    return int(np.triu(differs, 1).sum())
