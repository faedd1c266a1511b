"""Task bayesnet: count tables summed over clients give the pooled network, step for step."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.arrays import to_numpy_dict
from fedcore.config import ConfigError, parse_config
from fedcore.datasets.base import DatasetError
from fedcore.datasets.networks import Network, load_network, parse_bif, sample
from fedcore.statistics import StatisticsError, contribution, decode
from fedcore.tasks import checked_task
from fedcore.tasks.algorithm import RoundContext
from fedcore.tasks.base import ClientData
from fedcore.tasks.bayesnet import algorithm as bn
from fedcore.tasks.bayesnet import families as fm
from fedcore.tasks.bayesnet.inference import enumerate_query, variable_elimination
from fedcore.tasks.bayesnet.search import (
    REVERSE,
    apply,
    hill_climb,
    moves,
    reachability,
    shd,
)
from simulations.engines.inprocess import run_inprocess
from strategies.statistics import check_wire

ASIA = {
    "task": "bayesnet",
    "data": {"dataset": "asia", "num-clients": 6, "partition": "iid"},
    "train": {"rounds": 12},
    "bayesnet": {"records": 2000, "max-client-records": 1000},
    "evaluate": {"server": False},
}


def _cfg(**tables):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in ASIA.items()}
    for key, value in tables.items():
        raw[key] = raw.get(key, {}) | value
    return parse_config(raw)


def _client(records: np.ndarray) -> ClientData:
    return ClientData(records, records[:, 0], records[:0], records[:0, 0])


def _round(state, parts, cfg):
    """One round through the hooks and the statistics' wire format, summed in the clear."""
    spec = bn.spec(cfg, state)
    total = np.zeros(spec.size)
    for i, records in enumerate(parts):
        stats, _ = bn.client(state, _client(records), RoundContext(cfg, 1, i), None)
        total += contribution(stats, spec)
    return bn.server(state, decode(total, spec, len(parts)), cfg)[0]


def _run_hooks(cfg, parts, rounds):
    state = bn.init(cfg, None, None)
    trace = [state[bn.SEARCH + "adjacency"]]
    for _ in range(rounds):
        state = _round(state, parts, cfg)
        trace.append(state[bn.SEARCH + "adjacency"])
    return state, trace


def _random_network(draw_cards, parents, rng) -> Network:
    cpts = []
    for child, ps in enumerate(parents):
        shape = (*(draw_cards[p] for p in ps), draw_cards[child])
        cpts.append(rng.dirichlet(np.ones(draw_cards[child]), size=shape[:-1]).reshape(shape))
    names = tuple(f"x{i}" for i in range(len(parents)))
    states = tuple(tuple(f"s{k}" for k in range(c)) for c in draw_cards)
    return Network("random", names, states, tuple(parents), tuple(cpts))


@st.composite
def networks(draw, max_variables=5):
    n = draw(st.integers(2, max_variables))
    cards = draw(st.lists(st.integers(2, 3), min_size=n, max_size=n))
    parents = [
        tuple(sorted(draw(st.sets(st.integers(0, c - 1), max_size=2)))) if c else ()
        for c in range(n)
    ]
    return _random_network(cards, parents, np.random.default_rng(draw(st.integers(0, 2**32))))


def _pooled_cpts(records, adj, cards, pseudo=None):
    out = {}
    for child in range(len(cards)):
        fam = fm.family(child, np.flatnonzero(adj[:, child]))
        counts = np.zeros(fm.table_shape(fam, cards))
        for row in records:  # brute force: one record at a time
            q = np.ravel_multi_index([row[p] for p in fam[1]], [cards[p] for p in fam[1]])
            counts[q, row[child]] += 1
        a = 0.0 if pseudo is None else pseudo / counts.size
        n = counts + a
        rows = n.sum(axis=1, keepdims=True)
        out[child] = np.where(rows > 0, n / np.where(rows > 0, rows, 1), 1 / counts.shape[1])
    return out


# -- networks and records -------------------------------------------------------------------
def test_the_standard_networks_parse_with_their_published_sizes():
    sizes = {
        name: (len(n.variables), int(n.adjacency.sum()))
        for name in ("asia", "sachs", "alarm", "child")
        for n in [load_network(name)]
    }
    assert sizes == {"asia": (8, 8), "sachs": (11, 17), "alarm": (37, 46), "child": (20, 25)}
    asia = load_network("asia")
    either = asia.index("either")
    assert [asia.variables[p] for p in asia.parents[either]] == ["lung", "tub"]
    # P(either = yes | lung = no, tub = yes) = 1 (the OR gate), in the parents' axis order
    assert asia.cpts[either][1, 0].tolist() == [1.0, 0.0]
    assert asia.cpts[either][1, 1].tolist() == [0.0, 1.0]
    for name in ("alarm", "child"):
        for table in load_network(name).cpts:
            np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=1e-12)


def test_a_network_file_that_differs_from_its_checksum_is_refused(tmp_path, monkeypatch):
    import gzip

    from fedcore.datasets import networks

    path = tmp_path / "asia.bif.gz"
    path.write_bytes(gzip.compress(b"network unknown {\n}\n"))
    monkeypatch.setattr(networks, "bif_path", lambda name: path)
    networks.load_network.cache_clear()
    try:
        with pytest.raises(DatasetError, match="SHA-256"):
            networks.load_network("asia")
    finally:
        networks.load_network.cache_clear()


def test_a_cpt_row_missing_from_a_bif_file_is_refused():
    text = (
        "variable a { type discrete [ 2 ] { x, y }; }\n"
        "variable b { type discrete [ 2 ] { x, y }; }\n"
        "probability ( a ) { table 0.5, 0.5; }\n"
        "probability ( b | a ) { (x) 0.1, 0.9; }\n"
    )
    with pytest.raises(DatasetError, match="incomplete"):
        parse_bif(text, "broken")


def test_forward_sampling_matches_the_networks_marginals():
    asia = load_network("asia")
    records = sample(asia, 100_000, np.random.default_rng(1))
    args = (asia.cards, asia.parents, asia.cpts)
    for v in range(len(asia.variables)):
        p = variable_elimination(*args, [v])[0]
        assert abs((records[:, v] == 0).mean() - p) < 4 * math.sqrt(p * (1 - p) / 1e5) + 1e-4


# -- parameters ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    network=networks(),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
    pseudo=st.sampled_from([None, 1.0, 10.0]),
)
def test_summed_count_tables_give_the_pooled_cpts(network, sizes, seed, pseudo):
    """Known structure, clients of any size (empty ones too): the CPTs from the summed tables
    equal a brute-force count on the pooled records, maximum likelihood or BDeu."""
    records = sample(network, sum(sizes), np.random.default_rng(seed))
    parts = np.split(records, np.cumsum(sizes)[:-1])
    cfg = _cfg(
        bayesnet={
            "structure": "known",
            "parameters": "mle" if pseudo is None else "bdeu",
            "equivalent-sample-size": pseudo or 10.0,
        }
    )
    state = {
        bn.CARDS: network.cards,
        bn.SEARCH + "adjacency": network.adjacency,
        bn.SEARCH + "round": np.array(0),
        bn.SEARCH + "done": np.array(1),
        bn.REQUEST: bn.encode_families(
            [fm.family(c, ps) for c, ps in enumerate(network.parents)], len(network.cards)
        ),
        bn.CACHE + "families": np.zeros((0, len(network.cards) + 1), np.int64),
        bn.CACHE + "scores": np.zeros(0),
    }
    learned = _round(state, parts, cfg)
    expected = _pooled_cpts(records, network.adjacency, network.cards, pseudo)
    for child, table in expected.items():
        np.testing.assert_allclose(learned[f"{bn.CPT}{child}"], table, rtol=0, atol=1e-9)


@pytest.mark.parametrize("secagg", [{"mode": "off"}, {"mode": "full"}])
def test_a_run_learns_the_pooled_cpts_exactly_under_secure_aggregation(secagg):
    cfg = _cfg(
        data={"dataset": "child", "num-clients": 5, "partition": "dirichlet", "alpha": 0.3},
        bayesnet={"structure": "known", "records": 3000, "max-client-records": 3000},
        train={"rounds": 1},
        secagg=secagg,
    )
    rounds = []
    state = to_numpy_dict(run_inprocess(cfg, rounds.append))
    assert rounds[-1]["status"] == "aggregated" and rounds[-1]["aggregated-clients"] == 5
    records = np.concatenate([c.x_train for c in checked_task(cfg).load_data(cfg).clients])
    network = load_network("child")
    for child in range(len(network.variables)):
        fam = fm.family(child, network.parents[child])
        expected = fm.cpt(fm.family_counts(records, fam, network.cards))
        assert np.array_equal(state[f"{bn.CPT}{child}"], expected)  # bit for bit


# -- scores and structure --------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(network=networks(max_variables=3), n=st.integers(1, 60), seed=st.integers(0, 2**32))
def test_bic_and_bdeu_equal_their_definitions_on_the_records(network, n, seed):
    """BIC: the maximised log-likelihood record by record minus the penalty; BDeu: the
    Dirichlet-multinomial marginal likelihood by the chain rule of predictive
    probabilities (Heckerman et al. 1995, eq. 7's sequential form)."""
    records = sample(network, n, np.random.default_rng(seed))
    child = len(network.cards) - 1
    fam = fm.family(child, range(child))
    counts = fm.family_counts(records, fam, network.cards)
    q, r = counts.shape
    cell = lambda row: (  # noqa: E731
        np.ravel_multi_index([row[p] for p in fam[1]], [network.cards[p] for p in fam[1]]),
        row[child],
    )
    theta = counts / counts.sum(axis=1, keepdims=True).clip(1)
    loglik = sum(math.log(theta[cell(row)]) for row in records)
    assert fm.bic(counts) == pytest.approx(loglik - 0.5 * math.log(n) * q * (r - 1), abs=1e-9)
    ess, seen, marginal = 3.0, np.zeros((q, r)), 0.0
    for row in records:
        j, k = cell(row)
        marginal += math.log((seen[j, k] + ess / (q * r)) / (seen[j].sum() + ess / q))
        seen[j, k] += 1
    assert fm.bdeu(counts, ess) == pytest.approx(marginal, abs=1e-9)


def test_moves_never_make_a_cycle_and_reach_every_acyclic_neighbour():
    rng = np.random.default_rng(0)
    for _ in range(20):
        adj = np.triu(rng.random((5, 5)) < 0.4, 1).astype(np.int64)
        perm = rng.permutation(5)
        adj = adj[np.ix_(perm, perm)]
        found = set()
        for move in moves(adj, max_parents=5):
            after = apply(adj, move)
            assert not np.diag(reachability(after)).any()
            found.add(after.tobytes())
        acyclic = 0  # brute force: every graph one edge edit away that is a DAG
        for u in range(5):
            for v in range(5):
                if u == v:
                    continue
                for edit in ("add", "remove", REVERSE):
                    if (edit == "add") == bool(adj[u, v] or adj[v, u]) or (
                        edit != "add" and not adj[u, v]
                    ):
                        continue
                    after = adj.copy()
                    after[u, v] = int(edit == "add")
                    after[v, u] = int(edit == REVERSE) or after[v, u]
                    if not np.diag(reachability(after)).any():
                        acyclic += 1
        assert len(found) == acyclic


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32), clients=st.integers(1, 6), score=st.sampled_from(["bic", "bdeu"])
)
def test_federated_hill_climbing_takes_the_pooled_steps(seed, clients, score):
    rng = np.random.default_rng(seed)
    network = load_network("asia")
    records = sample(network, 1500, rng)
    cuts = np.sort(rng.integers(0, len(records), clients - 1))
    parts = np.split(records, cuts)  # uneven clients, possibly empty ones
    cfg = _cfg(bayesnet={"score": score, "max-client-records": 1500}, train={"rounds": 30})
    pooled_adj, steps = hill_climb(
        8,
        lambda f: fm.score(fm.family_counts(records, f, network.cards), score, 10.0),
        max_parents=4,
        max_steps=100,
    )
    expected, adj = [np.zeros((8, 8), np.int64)], np.zeros((8, 8), np.int64)
    for move in steps:
        adj = apply(adj, move)
        expected.append(adj)
    state, trace = _run_hooks(cfg, parts, len(steps) + 2)
    changed = [t for i, t in enumerate(trace) if i == 0 or not np.array_equal(t, trace[i - 1])]
    assert len(changed) == len(expected)
    for got, want in zip(changed, expected, strict=True):
        assert np.array_equal(got, want)
    assert state[bn.SEARCH + "done"] == 1
    assert np.array_equal(state[bn.ADJACENCY], pooled_adj)


def test_a_secure_run_learns_the_pooled_structure_and_its_cpts():
    cfg = _cfg(secagg={"mode": "full"}, train={"rounds": 15}, bayesnet={"score": "bdeu"})
    rounds = []
    state = to_numpy_dict(run_inprocess(cfg, rounds.append))
    records = np.concatenate([c.x_train for c in checked_task(cfg).load_data(cfg).clients])
    cards = load_network("asia").cards
    pooled, _ = hill_climb(8, lambda f: fm.bdeu(fm.family_counts(records, f, cards), 10.0), 4, 100)
    assert np.array_equal(state[bn.ADJACENCY], pooled)
    assert rounds[-1]["train"]["search-done"] == 1.0
    for child in range(8):
        fam = fm.family(child, np.flatnonzero(pooled[:, child]))
        assert np.array_equal(
            state[f"{bn.CPT}{child}"], fm.cpt(fm.family_counts(records, fam, cards))
        )
    assert shd(pooled, load_network("asia").adjacency) <= 4


def test_the_last_round_keeps_the_graph_its_counts_describe():
    """A search cut short by train.rounds still ends with the CPTs of its final graph."""
    cfg = _cfg(train={"rounds": 3})
    parts = [sample(load_network("asia"), 500, np.random.default_rng(3))]
    state, _ = _run_hooks(cfg, parts, 3)
    assert np.array_equal(state[bn.ADJACENCY], state[bn.SEARCH + "adjacency"])
    assert state[bn.ADJACENCY].sum() == 2  # two steps, and the third round's counts


# -- inference -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "targets, evidence",
    [
        (["lung"], {}),
        (["lung"], {"xray": "yes", "smoke": "no"}),
        (["tub", "lung"], {"dysp": "yes"}),
        (["asia"], {"xray": "yes", "dysp": "no", "bronc": "yes"}),
        (["either", "bronc", "smoke"], {"xray": "no"}),
    ],
)
def test_variable_elimination_equals_enumeration_on_asia(targets, evidence):
    asia = load_network("asia")
    t = [asia.index(v) for v in targets]
    e = {asia.index(v): asia.states[asia.index(v)].index(s) for v, s in evidence.items()}
    args = (asia.cards, asia.parents, asia.cpts)
    np.testing.assert_allclose(
        variable_elimination(*args, t, e), enumerate_query(*args, t, e), rtol=0, atol=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(network=networks(), data=st.data())
def test_variable_elimination_equals_enumeration_on_random_networks(network, data):
    v = len(network.cards)
    target = data.draw(st.integers(0, v - 1))
    others = [u for u in range(v) if u != target]
    evidence = {
        u: data.draw(st.integers(0, network.cards[u] - 1))
        for u in data.draw(st.sets(st.sampled_from(others), max_size=v - 1))
    }
    args = (network.cards, network.parents, network.cpts)
    np.testing.assert_allclose(
        variable_elimination(*args, [target], evidence),
        enumerate_query(*args, [target], evidence),
        rtol=0,
        atol=1e-12,
    )


# -- replies, clients, configuration ------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c + 0.5, "not whole"),
        (lambda c: c + 1001, "beyond its bound"),
        (lambda c: c[:-1], "shape"),
    ],
)
def test_malformed_count_tables_are_rejected(edit, message):
    cfg = _cfg()
    state = bn.init(cfg, None, None)
    records = sample(load_network("asia"), 50, np.random.default_rng(0))
    stats, _ = bn.client(state, _client(records), RoundContext(cfg, 1, 0), None)
    spec = bn.spec(cfg, state)
    bad = {bn.COUNTS: edit(stats[bn.COUNTS].astype(np.float64))}
    with pytest.raises(StatisticsError, match=message):
        contribution(bad, spec)  # the client layer refuses to send it
    if bad[bn.COUNTS].shape == stats[bn.COUNTS].shape:
        with pytest.raises(ValueError, match=message):
            check_wire(bad[bn.COUNTS], spec)  # and the server refuses it


def test_a_client_with_zero_records_sends_zero_tables():
    cfg = _cfg()
    state = bn.init(cfg, None, None)
    empty = np.zeros((0, 8), np.int64)
    stats, metrics = bn.client(state, _client(empty), RoundContext(cfg, 1, 0), None)
    assert stats[bn.COUNTS].shape == (bn.spec(cfg, state).size,)
    assert not stats[bn.COUNTS].any() and metrics["records"] == 0


def test_a_client_past_the_public_record_bound_is_refused():
    cfg = _cfg(bayesnet={"max-client-records": 10})
    state = bn.init(cfg, None, None)
    records = sample(load_network("asia"), 11, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max-client-records"):
        bn.client(state, _client(records), RoundContext(cfg, 1, 0), None)


def test_partitions_skew_by_the_chosen_variable():
    skew = {}
    for part in ("iid", "dirichlet"):
        cfg = _cfg(data={"partition": part, "alpha": 0.1}, bayesnet={"skew-variable": "smoke"})
        data = checked_task(cfg).load_data(cfg)
        assert sum(len(c.x_train) for c in data.clients) == 2000
        assert data.report["skew-variable"] == "smoke"
        skew[part] = data.report["label_skew"]
    assert skew["dirichlet"] > 0.2 > skew["iid"]


@pytest.mark.parametrize(
    "tables, message",
    [
        ({"data": {"dataset": "digits"}}, "data.dataset"),
        ({"data": {"partition": "natural"}}, "data.partition"),
        ({"train": {"fraction": 0.5}}, "train.fraction"),
        ({"bayesnet": {"skew-variable": "weather"}}, "bayesnet.skew-variable"),
    ],
)
def test_bayesnet_misconfiguration_is_refused(tables, message):
    with pytest.raises(ConfigError, match=message):
        checked_task(_cfg(**tables))


def test_client_level_dp_noises_the_counts_and_the_ledger_records_every_round():
    privacy = {"dp": "client", "clip-norm": 500.0, "noise-multiplier": 0.5}
    cfg = _cfg(privacy=privacy, evaluate={"fraction": 0.0, "server": True}, train={"rounds": 4})
    rounds = []
    state = to_numpy_dict(run_inprocess(cfg, rounds.append))
    events = [e for r in rounds for e in r["privacy-events"]]
    assert len(events) == 4 and {e["mechanism"] for e in events} == {"gaussian"}
    assert all(r["status"] == "aggregated" for r in rounds)
    for child in range(8):
        table = state[f"{bn.CPT}{child}"]
        assert np.isfinite(table).all() and np.allclose(table.sum(axis=1), 1.0)
    assert np.isfinite(rounds[-1]["server-eval"]["log-likelihood"])


def test_the_run_ends_when_the_search_does(tmp_path):
    """At the search's local optimum the CPTs are the final graph's: the run ends there
    instead of counting the same tables again (and, under DP, spending budget on them)."""
    import json

    from fedcore.cli import scenario_path
    from fedcore.config import load_scenario
    from simulations import runner

    cfg = load_scenario(scenario_path("asia-bayesnet"), {"train.rounds": 40})
    result = runner.simulate(cfg, out=tmp_path / "run", progress=False)
    rounds = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    assert len(rounds) < 40 and rounds[-1]["train"]["search-done"] == 1
    assert "bayesnet finished" in rounds[-1]["stopped"]
