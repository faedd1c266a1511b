"""Federated Bayesian-network learning (task ``bayesnet``) against centralized learning.

For ASIA, SACHS and ALARM, records forward-sampled from the network and split over 10 and
100 IID clients (the sums, hence the results, do not depend on the split), over ``--seeds``
seeds: the structural Hamming distance (SHD, on DAGs) of federated hill climbing (BIC) to
centralized hill climbing on the pooled records and to the true graph (goal: federated SHD
<= centralized SHD + 1, mean over seeds), the mean absolute CPT error against the true CPTs
with the known graph (federated and centralized), the rounds the search took, seconds per
run and bytes per client up to the round the search ended. Secure rows: the same at seed 0
under ``secagg.mode = "full"``. DP rows: client-level DP (Gaussian, shared layers) at
epsilon 1 and 8 (delta 1e-5), 100 clients, clip norm ``sqrt(families) x records per client``.

    .venv/bin/python benchmarks/bayesnet.py --seeds 5
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from fedcore.arrays import to_numpy_dict
from fedcore.config import parse_config
from fedcore.datasets.networks import load_network
from fedcore.tasks import checked_task
from fedcore.tasks.bayesnet import families as fm
from fedcore.tasks.bayesnet.algorithm import ADJACENCY, CPT
from fedcore.tasks.bayesnet.search import hill_climb, shd
from privacy.plan import dp_plan, record_noise
from simulations.engines.inprocess import run_inprocess

NETWORKS = {"asia": (5000, 30), "sachs": (5000, 40), "alarm": (10000, 70)}  # records, rounds


def config(name: str, clients: int, seed: int, **tables) -> dict:
    records, rounds = NETWORKS[name]
    raw = {
        "task": "bayesnet",
        "seed": seed,
        "data": {"dataset": name, "num-clients": clients, "partition": "iid"},
        "train": {"rounds": rounds},
        "bayesnet": {"records": records, "max-client-records": records},
        "evaluate": {"server": False, "fraction": 0.0},
    }
    for key, value in tables.items():
        raw[key] = raw.get(key, {}) | value
    return raw


def federated(raw: dict) -> dict:
    """One run: its final state, seconds, rounds to the search's end, bytes per client."""
    cfg = parse_config(raw)
    rounds, start = [], time.perf_counter()
    state = to_numpy_dict(run_inprocess(cfg, rounds.append))
    seconds = time.perf_counter() - start
    done = next((r["round"] for r in rounds if r["train"].get("search-done")), len(rounds))
    used = rounds[:done]
    traffic = sum(r["bytes-sent"] + r["bytes-received"] for r in used)
    return {
        "state": state,
        "seconds": seconds,
        "rounds": done,
        "bytes": traffic / cfg.data.num_clients,
        "cfg": cfg,
    }


def pooled(cfg) -> np.ndarray:
    return np.concatenate([c.x_train for c in checked_task(cfg).load_data(cfg).clients])


def cpt_error(state: dict, network) -> float:
    """Mean absolute error of the state's CPT entries against the true CPTs (known graph)."""
    errors = []
    for child, parents in enumerate(network.parents):
        order = np.argsort(parents)  # the state's tables have the parents sorted
        true = np.transpose(network.cpts[child], (*order, len(parents)))
        errors.append(np.abs(state[f"{CPT}{child}"].ravel() - true.ravel()))
    return float(np.concatenate(errors).mean())


def structure_rows(seeds: int) -> None:
    print("\nStructure (hill climbing, BIC, max 4 parents), mean over seeds")
    head = (
        f"{'network':<7} {'clients':>7} {'SHD fed-true':>12} {'SHD cen-true':>12} "
        f"{'SHD fed-cen':>11} {'rounds':>6} {'s/run fed':>9} {'s/run cen':>9} {'MB/client':>9}"
    )
    print(head)
    for name in NETWORKS:
        network = load_network(name)
        for clients in (10, 100):
            rows = []
            for seed in range(seeds):
                run = federated(config(name, clients, seed))
                records = pooled(run["cfg"])
                start = time.perf_counter()
                central, _ = hill_climb(
                    len(network.variables),
                    lambda f, r=records, c=network.cards: fm.bic(fm.family_counts(r, f, c)),
                    4,
                    1000,
                )
                central_s = time.perf_counter() - start
                fed = run["state"][ADJACENCY]
                rows.append(
                    (
                        shd(fed, network.adjacency),
                        shd(central, network.adjacency),
                        shd(fed, central),
                        run["rounds"],
                        run["seconds"],
                        central_s,
                        run["bytes"] / 1e6,
                    )
                )
            m = np.mean(rows, axis=0)
            print(
                f"{name:<7} {clients:>7} {m[0]:>12.1f} {m[1]:>12.1f} {m[2]:>11.1f} {m[3]:>6.1f} "
                f"{m[4]:>9.2f} {m[5]:>9.2f} {m[6]:>9.3f}",
                flush=True,
            )


def secure_rows() -> None:
    print("\nSecure aggregation (secagg.mode = full), seed 0, 10 clients")
    print(f"{'network':<7} {'SHD fed-true':>12} {'SHD vs plain':>12} {'s/run':>7} {'MB/client':>9}")
    for name in NETWORKS:
        network = load_network(name)
        plain = federated(config(name, 10, 0))
        secure = federated(config(name, 10, 0, secagg={"mode": "full"}))
        a, b = secure["state"][ADJACENCY], plain["state"][ADJACENCY]
        print(
            f"{name:<7} {shd(a, network.adjacency):>12} {shd(a, b):>12} "
            f"{secure['seconds']:>7.2f} {secure['bytes'] / 1e6:>9.3f}",
            flush=True,
        )


def cpt_rows(seeds: int) -> None:
    print("\nParameters (known graph, maximum likelihood, one round), mean over seeds")
    print(
        f"{'network':<7} {'clients':>7} {'CPT MAE fed':>11} {'CPT MAE cen':>11} "
        f"{'max |fed-cen|':>13}"
    )
    for name in NETWORKS:
        network = load_network(name)
        for clients in (10, 100):
            rows = []
            for seed in range(seeds):
                run = federated(config(name, clients, seed, bayesnet={"structure": "known"}))
                records = pooled(run["cfg"])
                central = {
                    f"{CPT}{c}": fm.cpt(fm.family_counts(records, fm.family(c, ps), network.cards))
                    for c, ps in enumerate(network.parents)
                }
                gap = max(np.abs(run["state"][k] - v).max() for k, v in central.items())
                rows.append((cpt_error(run["state"], network), cpt_error(central, network), gap))
            m = np.mean(rows, axis=0)
            print(f"{name:<7} {clients:>7} {m[0]:>11.4f} {m[1]:>11.4f} {m[2]:>13.1e}", flush=True)


def _dp_means(name: str, structure: str, privacy: dict, seeds: int) -> tuple[np.ndarray, object]:
    """Mean (CPT error, SHD to the true graph) over seeds of 100-client runs under
    ``privacy``, and the last run's config; the known graph takes one round."""
    network = load_network(name)
    rows = []
    for seed in range(seeds):
        raw = config(name, 100, seed, bayesnet={"structure": structure}, privacy=privacy)
        if structure == "known":
            raw["train"] = raw["train"] | {"rounds": 1}
        run = federated(raw)
        state = run["state"]
        error = cpt_error(state, network) if structure == "known" else float("nan")
        rows.append((error, shd(state[ADJACENCY], network.adjacency)))
    return np.mean(rows, axis=0), run["cfg"]


def dp_rows(seeds: int) -> None:
    print("\nClient-level DP (Gaussian, delta 1e-5), 100 clients, mean over seeds")
    print(
        f"{'network':<7} {'graph':<10} {'epsilon':>7} {'CPT MAE':>8} {'SHD fed-true':>12} "
        f"{'noise z':>7}"
    )
    for name in ("asia", "sachs"):
        per_client = NETWORKS[name][0] / 100
        clip = math.sqrt(len(load_network(name).variables)) * per_client
        for structure in ("known", "hill-climb"):
            for eps in (1.0, 8.0):
                privacy = {"dp": "client", "clip-norm": clip, "target-epsilon": eps}
                m, cfg = _dp_means(name, structure, privacy, seeds)
                z = dp_plan(cfg).noise_multiplier
                print(
                    f"{name:<7} {structure:<10} {eps:>7g} {m[0]:>8.4f} {m[1]:>12.1f} {z:>7.2f}",
                    flush=True,
                )


def record_dp_rows(seeds: int) -> None:
    """Record-level DP (one record protected; privacy.dp = "record"), each mechanism."""
    print("\nRecord-level DP (delta 1e-5), 100 clients, mean over seeds")
    print(
        f"{'network':<7} {'graph':<10} {'mechanism':<17} {'epsilon':>7} {'CPT MAE':>8} "
        f"{'SHD fed-true':>12} {'noise z':>7}"
    )
    for name in ("asia", "sachs"):
        for structure in ("known", "hill-climb"):
            for mechanism in ("gaussian", "laplace", "discrete-gaussian"):
                for eps in (1.0, 8.0):
                    privacy = {"dp": "record", "mechanism": mechanism, "target-epsilon": eps}
                    m, cfg = _dp_means(name, structure, privacy, seeds)
                    print(
                        f"{name:<7} {structure:<10} {mechanism:<17} {eps:>7g} {m[0]:>8.4f} "
                        f"{m[1]:>12.1f} {record_noise(cfg):>7.2f}",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--parts",
        default="structure,secure,cpt,dp,record",
        help="comma-separated: which tables",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    parts = args.parts.split(",")
    if "structure" in parts:
        structure_rows(args.seeds)
    if "secure" in parts:
        secure_rows()
    if "cpt" in parts:
        cpt_rows(args.seeds)
    if "dp" in parts:
        dp_rows(args.seeds)
    if "record" in parts:
        record_dp_rows(args.seeds)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
