"""Secure matrix products (task ``linear``): error against centralized, seconds and bytes.

Setups, each measured in one run of this script:

- diabetes ridge (scikit-learn's bundled data, scenario ``linear-diabetes-ridge``: 10 clients,
  one round), in the clear and under secure aggregation (``secagg.mode = "full"``): the
  largest coefficient error against scikit-learn's ``Ridge`` on the pooled rows.
- MNIST PCA, 784 dimensions, 10 components, 10 IID clients of 6,000 rows: one round from the
  summed covariance (each client sends its Gram's upper triangle, 307,720 numbers), in the
  clear and under secure aggregation, and federated subspace iteration (10 + 10 columns, each
  round 784 x 20 numbers a client). Principal angles against scikit-learn's ``PCA`` (full
  SVD) on the pooled rows.
- vertical ridge: a synthetic 10^5 x 330 split into two parties of 165 features (party B also
  holds the targets), the cross product ``A^T [B y]`` by two-party secret sharing with a
  dealer's Beaver triple (:mod:`fedcore.tasks.linear.vertical`, in process, the messages
  counted), against ridge on the joined data. Context only, not like-for-like: FATE 2.0's
  coordinated (homomorphic-encryption) logistic regression on a 10^5 x 330 split takes
  2 min 16 s per epoch on two 16-core hosts; ours is a one-shot closed-form ridge on 2 cores
  in one process, with a dealer (a third party) that FATE does not need.

    .venv/bin/python benchmarks/linear.py            # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge

from fedcore.cli import scenario_path
from fedcore.config import RunConfig, load_scenario, parse_config
from fedcore.tasks.linear import algorithm, products, vertical
from simulations.engines.inprocess import run_inprocess


def _pooled(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    data = algorithm.load_data(cfg)
    x = np.concatenate([c.x_train.numpy() for c in data.clients]).astype(np.float64)
    return x, np.concatenate([c.y_train.numpy() for c in data.clients]).astype(np.float64)


def _run(cfg: RunConfig) -> tuple[dict[str, np.ndarray], list[dict], float]:
    rounds: list[dict] = []
    start = time.perf_counter()
    state = run_inprocess(cfg, rounds.append)
    return {k: v.numpy() for k, v in state.items()}, rounds, time.perf_counter() - start


def _per_client(rounds: list[dict], cfg: RunConfig) -> float:
    """Bytes a client sent over the run (what the server received, over the clients)."""
    return sum(r["bytes-received"] for r in rounds) / cfg.data.num_clients


def diabetes() -> list[str]:
    rows = []
    for label, over in (("plain", {"secagg.mode": "off"}), ("secure aggregation", {})):
        cfg = load_scenario(scenario_path("linear-diabetes-ridge"), over)
        state, rounds, seconds = _run(cfg)
        x, y = _pooled(cfg)
        ref = Ridge(alpha=cfg.linear.alpha).fit(x, y)
        error = np.abs(state["coef"] - ref.coef_).max()
        r2 = rounds[-1]["server-eval"]["r2"]
        rows.append(
            f"| diabetes ridge, 10 clients, {label} | max coef error {error:.1e} "
            f"(coefs up to {np.abs(ref.coef_).max():.0f}); test R^2 {r2:.3f} | 1 | "
            f"{seconds:.2f} | {_per_client(rounds, cfg) / 1e3:.1f} kB |"
        )
    return rows


MNIST = {
    "task": "linear",
    "seed": 0,
    "data": {"dataset": "mnist", "num-clients": 10, "partition": "iid", "local-test-fraction": 0},
    "train": {"rounds": 1},
    "evaluate": {"fraction": 0.0, "server": False},
    "linear": {"method": "pca", "components": 10, "max-rows": 10000},
}


def mnist(subspace_rounds: int) -> list[str]:
    cfg = parse_config(MNIST)
    x, _ = _pooled(cfg)
    start = time.perf_counter()
    ref = PCA(10, svd_solver="full").fit(x)
    central = time.perf_counter() - start
    rows = [f"| MNIST PCA, centralized (scikit-learn full SVD, 60,000 x 784) | reference | - | "
            f"{central:.1f} | - |"]  # fmt: skip
    setups = (
        ("one round (summed covariance), plain", {}),
        ("one round (summed covariance), secure aggregation", {"secagg": {"mode": "full"}}),
        (
            "subspace iteration (10 + 10 columns), plain",
            {
                "train": {"rounds": subspace_rounds},
                "linear": MNIST["linear"] | {"method": "subspace", "oversample": 10},
            },
        ),
    )
    for label, over in setups:
        cfg = parse_config(MNIST | over)
        state, rounds, seconds = _run(cfg)
        angle = products.principal_angles(state["components"], ref.components_).max()
        note = ""
        if cfg.linear.method == "subspace":
            changes = [r["train"].get("subspace-change", 1.0) for r in rounds]
            below = next((i + 1 for i, c in enumerate(changes) if c < 1e-7), None)
            note = f"; per-round change < 1e-7 from round {below}"
        rows.append(
            f"| MNIST PCA, 10 clients, {label} | largest principal angle {angle:.1e} rad{note} | "
            f"{len(rounds)} | {seconds:.1f} | {_per_client(rounds, cfg) / 1e6:.2f} MB |"
        )
    return rows


def synthetic_vertical(rows: int, features: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, features))
    w = rng.standard_normal(features) / np.sqrt(features)
    y = np.clip(x @ w + rng.normal(0, 0.1, rows), -8, 8)
    half = features // 2
    start = time.perf_counter()
    fit = vertical.vertical_ridge(x[:, :half], x[:, half:], y, 1.0, a_bound=1.0, b_bound=8.0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    ref = Ridge(alpha=1.0).fit(x, y)
    central = time.perf_counter() - start
    coef = np.concatenate([fit.coef_a, fit.coef_b])
    error = np.abs(coef - ref.coef_).max()
    t = fit.traffic.bytes
    parties = {
        "dealer": t[("dealer", "A")] + t[("dealer", "B")],
        "A->B": t[("A", "B")],
        "B->A": t[("B", "A")],
    }
    traffic = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in parties.items())
    return [
        f"| vertical ridge, {rows:,} x {features} split {half} + {features - half} (+ y), "
        f"{fit.cross.frac_bits} fraction bits | max coef error {error:.1e} (coefs up to "
        f"{np.abs(ref.coef_).max():.2f}; product bound {fit.cross.error_bound:.1e}/entry) | 1 | "
        f"{seconds:.1f} (centralized {central:.1f}) | {traffic} |"
    ]


def diabetes_vertical() -> list[str]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    start = time.perf_counter()
    fit = vertical.vertical_ridge(x[:, :5], x[:, 5:], y, 0.1, a_bound=0.25, b_bound=400.0)
    seconds = time.perf_counter() - start
    ref = Ridge(alpha=0.1).fit(x, y)
    error = np.abs(np.concatenate([fit.coef_a, fit.coef_b]) - ref.coef_).max()
    return [
        f"| vertical ridge, diabetes 442 x 10 split 5 + 5 (+ y) | max coef error {error:.1e} | 1 | "
        f"{seconds:.3f} | {fit.traffic.total / 1e3:.1f} kB in all |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subspace-rounds", type=int, default=60)
    parser.add_argument("--vertical-rows", type=int, default=100_000)
    args = parser.parse_args()
    print("| setup | error against centralized | rounds | seconds | bytes per client |")
    print("|---|---|---|---|---|")
    sections = (
        diabetes,
        diabetes_vertical,
        lambda: mnist(args.subspace_rounds),
        lambda: synthetic_vertical(args.vertical_rows, 330, 0),
    )
    for section in sections:
        for row in section():
            print(row, flush=True)


if __name__ == "__main__":
    main()
