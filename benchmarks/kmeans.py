"""Federated k-means (task ``kmeans``) against centralized scikit-learn, on the issue's grid.

Per case: the k-means cost (inertia) of the final centroids on the pooled training points,
as a ratio to scikit-learn's ``KMeans`` run centrally from the same initial centroids (the
federated round-1 seeds) for the same number of Lloyd iterations (goal <= 1.01; plain Lloyd
is the same algorithm, so this checks the federation loses nothing) and to scikit-learn's
default (k-means++, best of 10 starts, to convergence); homogeneity and NMI of the held-out
points; Lloyd rounds; seconds per round; bytes per client per Lloyd round and in the seeding
round. Cases:

- ``iris``: NVFlare's three sites (anchor: homogeneity about 0.78 by round 4).
- ``mnist``: k = 10 over 100 Dirichlet (alpha 0.5) clients; plain and under secure
  aggregation (``random`` seeding there: k-FED's per-client blocks would be masked whole).
- ``blobs``: 10^6 points (10 Gaussian blobs, 10 features) over 1000 Dirichlet clients.
- ``dp``: the blobs under client-level DP at epsilon 1 and 8 (``random`` seeding; every
  client in every round, so no amplification by sampling).
- ``dp-record``: the blobs under record-level DP (one point protected) at epsilon 1 and 8.

    .venv/bin/python benchmarks/kmeans.py [--cases iris mnist blobs dp dp-record]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from fedcore.arrays import to_numpy
from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from fedcore.tasks import get_algorithm
from fedcore.tasks.kmeans import lloyd
from fedcore.tasks.kmeans.algorithm import CENTROIDS
from simulations.engines.inprocess import run_inprocess


def blobs(path: Path, n: int = 1_000_000, k: int = 10, d: int = 10) -> Path:
    """``n`` points around ``k`` centres in ``d`` dimensions, scaled into [0, 1]."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n, d, centers=k, cluster_std=1.5, random_state=0)
    x = (x - x.min()) / (x.max() - x.min())
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def run_case(name: str, overrides: dict) -> dict:
    cfg = load_scenario(scenario_path("iris-kmeans"), overrides)
    x = np.concatenate(
        [np.asarray(c.x_train, np.float64) for c in get_algorithm("kmeans").load_data(cfg).clients]
    )
    x = x.reshape(len(x), -1)
    seeds_cfg = load_scenario(scenario_path("iris-kmeans"), overrides | {"train.rounds": 1})
    seeds = to_numpy(run_inprocess(seeds_cfg, lambda r: None)[CENTROIDS])
    records = []
    start = time.perf_counter()
    final = to_numpy(run_inprocess(cfg, records.append)[CENTROIDS])
    seconds = time.perf_counter() - start
    iterations = cfg.train.rounds - 1
    same_start = KMeans(cfg.kmeans.k, init=seeds, n_init=1, max_iter=iterations, tol=0)
    same_start = same_start.fit(x).inertia_
    default = KMeans(cfg.kmeans.k, n_init=10, random_state=0).fit(x).inertia_
    ours = lloyd.cost(x, final)
    lloyd_rounds = records[1:]
    per_client = [r["bytes-received"] / max(r["train-clients"], 1) for r in lloyd_rounds]
    return {
        "case": name,
        "points": len(x),
        "clients": cfg.data.num_clients,
        "rounds": iterations,
        "ratio same start": ours / same_start,
        "ratio sklearn default": ours / default,
        "homogeneity": records[-1]["server-eval"]["homogeneity"],
        "nmi": records[-1]["server-eval"]["nmi"],
        "s/round": float(np.median([r["seconds"] for r in lloyd_rounds])),
        "KB/client/round": float(np.median(per_client)) / 1e3,
        "seed KB/client": records[0]["bytes-received"] / max(records[0]["train-clients"], 1) / 1e3,
        # the noise is calibrated so that the planned run spends privacy.target-epsilon
        "epsilon": cfg.privacy.target_epsilon if cfg.privacy.dp != "off" else float("nan"),
        "noise multiplier": float(
            (records[-1]["privacy-events"] or [{}])[0].get("noise_multiplier", float("nan"))
        ),
        "wall s": seconds,
        "homogeneity by round": [round(r["server-eval"]["homogeneity"], 3) for r in records],
    }


def cases(selected: list[str], tmp: Path) -> list[tuple[str, dict]]:
    out = []
    if "iris" in selected:
        out.append(("iris, 3 sites, k-FED", {"train.rounds": 5}))
    mnist = {
        "data.dataset": "mnist",
        "data.num-clients": 100,
        "data.partition": "dirichlet",
        "data.alpha": 0.5,
        "kmeans.k": 10,
        "train.rounds": 21,
    }
    if "mnist" in selected:
        out.append(("mnist k=10, 100 clients, k-FED", mnist))
        out.append(
            (
                "mnist k=10, 100 clients, secagg full, random seeds",
                mnist | {"secagg.mode": "full", "secagg.frac-bits": 32, "kmeans.init": "random"},
            )
        )
    if {"blobs", "dp", "dp-record"} & set(selected):
        path = blobs(tmp / "blobs.npz")
        base = {
            "data.dataset": "files",
            "data.train-file": str(path),
            "data.test-fraction": 0.01,
            "data.num-clients": 1000,
            "data.partition": "dirichlet",
            "data.alpha": 0.5,
            "kmeans.k": 10,
            "train.rounds": 11,
        }
        if "blobs" in selected:
            out.append(("blobs 10^6 x 10, 1000 clients, k-FED", base))
            out.append(("blobs 10^6 x 10, 1000 clients, random", base | {"kmeans.init": "random"}))
        dp_modes = {  # the privacy settings of each DP case
            "dp": ("client", {"privacy.dp": "client", "privacy.clip-norm": 1000.0}),
            "dp-record": ("record", {"privacy.dp": "record"}),
        }
        for case, (unit, privacy) in dp_modes.items():
            if case not in selected:
                continue
            for eps in (1.0, 8.0):
                dp = privacy | {"kmeans.init": "random", "privacy.target-epsilon": eps}
                out.append((f"blobs, {unit} DP epsilon {eps:g}, random", base | dp))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["iris", "mnist", "blobs", "dp", "dp-record"])
    args = parser.parse_args()
    columns = [
        "case",
        "points",
        "clients",
        "rounds",
        "ratio same start",
        "ratio sklearn default",
        "homogeneity",
        "nmi",
        "s/round",
        "KB/client/round",
        "seed KB/client",
        "epsilon",
        "noise multiplier",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in cases(args.cases, Path(tmp)):
            row = run_case(name, overrides)
            cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
            print("| " + " | ".join(cells) + " |", flush=True)
            print(
                f"  homogeneity by round: {row['homogeneity by round']}; wall {row['wall s']:.1f} s"
            )


if __name__ == "__main__":
    main()
