"""Task ``bayesnet``: a Bayesian network learned from securely summed count tables.

Every round the global state names the families (child, parent set) whose count tables the
server needs (``request``); each client counts them on its own records and sends the tables
as one integer array, so under secure aggregation the server learns the pooled tables only,
summed exactly. From them:

- parameters: the CPTs of the current graph, ``(N_jk + a) / (N_j + r a)`` (maximum
  likelihood, ``a = 0``, or BDeu's posterior mean): exactly the pooled data's estimate;
- structure (``bayesnet.structure = "hill-climb"``): greedy hill climbing from the empty
  graph with BIC or BDeu (:mod:`~fedcore.tasks.bayesnet.search`). A round scores the
  families it asked for, caches their scores on the server, takes the best move, and asks
  for the families the next step needs that it has not scored yet (and the graph's own,
  whose tables give the CPTs). The steps are those of the pooled search, one per round; the
  search ends at a local optimum or at the run's last round, whose counts give the CPTs of
  the final graph, and the run ends there (``Algorithm.finished``).

Under record-level DP (``privacy.dp = "record"``) the server adds Gaussian (or, with
``privacy.mechanism = "laplace"``, Laplace) noise to the summed tables, scaled to what one
record changes (:func:`record_sensitivity`: one cell of every requested table), and records
the release in the ledger. Under client-level DP (``privacy.dp = "client"`` ...) the shared
layers clip every client's whole vector of tables to ``privacy.clip-norm`` and add Gaussian
noise to the sum. Either way the server hook takes the noised counts with negatives set to
zero (post-processing).
"""

from __future__ import annotations

import numpy as np

from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import NETWORKS
from fedcore.datasets.networks import load_network
from fedcore.statistics import INTEGER, ArraySpec, Spec, Summed
from fedcore.tasks.algorithm import Algorithm, RoundContext, State
from fedcore.tasks.base import ClientData, ModelShape
from fedcore.tasks.bayesnet import data as bn_data
from fedcore.tasks.bayesnet.families import (
    Family,
    bdeu_pseudo_count,
    cpt,
    family,
    family_counts,
    score,
    table_shape,
)
from fedcore.tasks.bayesnet.inference import log_likelihood
from fedcore.tasks.bayesnet.options import BayesNetOptions
from fedcore.tasks.bayesnet.search import (
    apply,
    best_move,
    current_families,
    needed_families,
    parents_of,
    shd,
)

COUNTS = "counts"  # the statistics: the requested families' count tables, concatenated
CARDS, ADJACENCY, CPT = "cards", "adjacency", "cpt/"  # the learned network
REQUEST = "request"  # rows (child, parent mask): the families to count this round
SEARCH = "search/"  # server-only: the search's graph, round, and whether it ended
CACHE = "cache/"  # server-only: the families scored so far and their scores


def encode_families(families: list[Family], num_variables: int) -> np.ndarray:
    """Families as rows ``(child, parent mask)``, int64 ``(len, V + 1)``."""
    rows = np.zeros((len(families), num_variables + 1), np.int64)
    for i, (child, parents) in enumerate(families):
        rows[i, 0] = child
        rows[i, 1 + np.array(parents, np.int64)] = 1
    return rows


def decode_families(rows: np.ndarray) -> list[Family]:
    rows = np.asarray(rows, np.int64)
    if rows.ndim != 2 or not np.isin(rows[:, 1:], (0, 1)).all():
        raise ValueError(f"a family request must be rows (child, 0/1 parent mask), got {rows!r}")
    return [family(r[0], np.flatnonzero(r[1:])) for r in rows]


def _sizes(families: list[Family], cards: np.ndarray) -> list[int]:
    return [int(np.prod(table_shape(f, cards))) for f in families]


def spec(cfg: RunConfig, state: State) -> Spec:
    """One integer array: the requested count tables, every count within the public bound
    on a client's records."""
    cards = np.asarray(state[CARDS], np.int64)
    total = sum(_sizes(decode_families(state[REQUEST]), cards))
    bound = cfg.bayesnet.max_client_records
    return Spec.of({COUNTS: ArraySpec((total,), INTEGER, bound)})


def record_sensitivity(cfg: RunConfig, state: State) -> tuple[float, float]:
    """Record-level DP (``privacy.dp = "record"``): one record adds 1 to one cell of every
    requested table, so the summed tables move by ``tables`` in L1, ``sqrt(tables)`` in L2."""
    tables = len(decode_families(state[REQUEST]))
    return float(tables), float(np.sqrt(tables))


def init(cfg: RunConfig, data: ModelShape, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The empty graph (or, ``structure = "known"``, the network's) with uniform CPTs, and
    the first request: every family one step from it."""
    network = load_network(cfg.data.dataset)
    v, o = len(network.variables), cfg.bayesnet
    adj = network.adjacency if o.structure == "known" else np.zeros((v, v), np.int64)
    return {
        CARDS: network.cards,
        **_network(adj, network.cards, {}, o),
        SEARCH + "adjacency": adj,
        SEARCH + "round": np.array(0),
        SEARCH + "done": np.array(int(o.structure == "known")),
        REQUEST: encode_families(_request(adj, {}, o, o.structure == "known"), v),
        CACHE + "families": np.zeros((0, v + 1), np.int64),
        CACHE + "scores": np.zeros(0),
    }


def _request(adj: np.ndarray, scored: dict, o: BayesNetOptions, done: bool) -> list[Family]:
    """The graph's own families, then (while searching) the unscored ones a step needs."""
    own = current_families(adj)
    if done:
        return own
    return own + [
        f for f in needed_families(adj, o.max_parents) if f not in scored and f not in own
    ]


def _network(adj: np.ndarray, cards: np.ndarray, tables: dict, o: BayesNetOptions) -> dict:
    """The state's network: ``adj`` and its CPTs, ``(q, r)`` each, from ``tables`` (uniform
    where a family has no table yet)."""
    out = {ADJACENCY: adj.copy()}
    for fam in current_families(adj):
        shape = table_shape(fam, cards)
        counts = tables.get(fam, np.zeros(shape))
        a = bdeu_pseudo_count(shape, o.equivalent_sample_size) if o.parameters == "bdeu" else 0.0
        out[f"{CPT}{fam[0]}"] = cpt(counts, a)
    return out


def client(state: State, data: ClientData, context: RoundContext, rng: np.random.Generator):
    """This client's count tables of the requested families, concatenated."""
    cards = np.asarray(state[CARDS], np.int64)
    records = np.asarray(data.x_train, np.int64)
    bound = context.cfg.bayesnet.max_client_records
    if records.ndim != 2 or records.shape[1] != len(cards):
        raise ValueError(f"records of shape {records.shape} do not fit {len(cards)} variables")
    if len(records) > bound:
        raise ValueError(
            f"this client holds {len(records)} records, more than the public bound "
            f"bayesnet.max-client-records = {bound}"
        )
    if len(records) and ((records < 0) | (records >= cards)).any():
        raise ValueError("a record has a state index outside its variable's states")
    tables = [family_counts(records, f, cards).ravel() for f in decode_families(state[REQUEST])]
    counts = np.concatenate(tables) if tables else np.zeros(0, np.int64)
    return {COUNTS: counts}, {"records": float(len(records))}


def server(state: State, summed: Summed, cfg: RunConfig):
    """Score the summed tables, set the CPTs of the graph, take one hill-climbing step and
    ask for what the next one needs."""
    o = cfg.bayesnet
    cards = np.asarray(state[CARDS], np.int64)
    requested = decode_families(state[REQUEST])
    cuts = np.cumsum(_sizes(requested, cards))[:-1]
    tables = {
        f: t.reshape(table_shape(f, cards))
        for f, t in zip(requested, np.split(summed[COUNTS], cuts), strict=True)
    }
    scored = dict(
        zip(
            decode_families(state[CACHE + "families"]),
            np.asarray(state[CACHE + "scores"]).tolist(),
            strict=True,
        )
    )
    for f, t in tables.items():
        scored[f] = score(t, o.score, o.equivalent_sample_size)
    adj = np.asarray(state[SEARCH + "adjacency"], np.int64)
    new = {CARDS: cards, **_network(adj, cards, tables, o)}  # its families are in every request
    round_ = int(state[SEARCH + "round"]) + 1
    done = bool(state[SEARCH + "done"])
    metrics = {
        "score": float(sum(scored[f] for f in current_families(adj))),
        "families-counted": float(len(requested)),
    }
    if not done and round_ < cfg.train.rounds:  # the last round keeps its graph's CPTs
        found = best_move(adj, scored, o.max_parents)
        if found is None:
            done = True
        else:
            adj = apply(adj, found[0])
            metrics["gain"] = found[1]
    metrics |= {"edges": float(adj.sum()), "search-done": float(done)}
    v = len(cards)
    families = sorted(scored)
    new |= {
        SEARCH + "adjacency": adj,
        SEARCH + "round": np.array(round_),
        SEARCH + "done": np.array(int(done)),
        REQUEST: encode_families(_request(adj, scored, o, done), v),
        CACHE + "families": encode_families(families, v),
        CACHE + "scores": np.array([scored[f] for f in families]),
    }
    return new, metrics


def learned(state: State) -> tuple[np.ndarray, list[tuple[int, ...]], list[np.ndarray]]:
    """The state's network as ``(cards, parents, cpts)`` (CPTs ``(q, r)``)."""
    cards = np.asarray(state[CARDS], np.int64)
    adj = np.asarray(state[ADJACENCY])
    parents = [parents_of(adj, c) for c in range(len(cards))]
    return cards, parents, [np.asarray(state[f"{CPT}{c}"]) for c in range(len(cards))]


def evaluate(state: State, x, y, cfg: RunConfig) -> dict[str, float]:
    """The test records' mean log-likelihood and the learned graph's SHD from the true one
    (a simulation's metric: the network is public)."""
    cards, parents, cpts = learned(state)
    true = load_network(cfg.data.dataset).adjacency
    return {
        "log-likelihood": log_likelihood(np.asarray(x, np.int64), parents, cpts, cards),
        "shd": float(shd(np.asarray(state[ADJACENCY]), true)),
        "edges": float(np.asarray(state[ADJACENCY]).sum()),
    }


def check_config(cfg: RunConfig) -> None:
    """ConfigError for data that is not a network's records, a partition that does not
    split records, or a cohort that is not every client (each step needs everyone's
    counts)."""
    d, t = cfg.data, cfg.train
    if d.dataset not in NETWORKS:
        raise ConfigError(
            f"task 'bayesnet' learns a network's records: data.dataset must be one of "
            f"{', '.join(NETWORKS)}, not {d.dataset!r}"
        )
    if d.partition not in bn_data.PARTITIONS:
        raise ConfigError(
            f"data.partition = {d.partition!r} is not for networks; use "
            f"{', '.join(bn_data.PARTITIONS)}"
        )
    if t.fraction != 1.0 or t.sampling != "fixed-size":
        raise ConfigError(
            "task 'bayesnet' sums every client's counts in every round (the search's steps "
            "are the pooled data's): train.fraction must be 1 and train.sampling "
            f"'fixed-size', not {t.fraction} and {t.sampling!r}"
        )
    bn_data.skew_variable(cfg, load_network(d.dataset))


TASK = Algorithm(
    name="bayesnet",
    load_data=bn_data.load_data,
    init=init,
    spec=spec,
    client=client,
    server=server,
    evaluate=evaluate,
    check_config=check_config,
    load_server=bn_data.load_server,
    server_only=(SEARCH, CACHE),
    sections={"bayesnet": BayesNetOptions},
    record_sensitivity=record_sensitivity,
    finished=lambda state: bool(state[SEARCH + "done"]),  # the CPTs are the final graph's
)
