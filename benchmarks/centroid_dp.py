"""The example algorithm on typed statistics (examples/centroid_task.py) under each privacy mode.

A federated nearest-centroid classifier on scikit-learn's digits, one round: test accuracy
(mean and std over seeds) in the clear, under secure aggregation, and under client-level DP
at epsilon 1 and 8 (central, distributed under secure aggregation, local), with clip norm 1
and delta 1e-5. The reference is scikit-learn's ``NearestCentroid`` on the pooled data, which
the clear and secure rows must equal.

    PYTHONPATH=examples .venv/bin/python benchmarks/centroid_dp.py --clients 100 --seeds 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import fedcore

MODES = {
    "clear": {},
    "secure": {"secagg": {"mode": "sparse"}},
    "central": {"privacy": {"dp": "client", "clip-norm": 1.0}},
    "distributed": {
        "secagg": {"mode": "sparse"},
        "privacy": {"dp": "distributed", "clip-norm": 1.0},
    },
    "local": {"privacy": {"dp": "local", "clip-norm": 1.0}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(f"digits, {args.clients} IID clients, one round, {args.seeds} seeds")
    print(f"{'mode':<12} {'epsilon':>8} {'accuracy':>16} {'s/run':>7}")
    for mode, settings in MODES.items():
        for eps in [None] if "privacy" not in settings else [1.0, 8.0]:
            accuracies, start = [], time.perf_counter()
            for seed in range(args.seeds):
                cfg = {
                    "seed": seed,
                    "data": {"num-clients": args.clients, "partition": "iid"},
                    "train": {"rounds": 1},
                    "evaluate": {"fraction": 0.0},
                } | settings
                if eps is not None:
                    cfg["privacy"] = cfg["privacy"] | {"target-epsilon": eps}
                with tempfile.TemporaryDirectory() as tmp:
                    result = fedcore.simulate(
                        cfg, task="centroid_task:ALGORITHM", out=Path(tmp) / "run"
                    )
                accuracies.append(result.summary["final_metrics"]["server-eval/accuracy"])
            seconds = (time.perf_counter() - start) / args.seeds
            a = np.array(accuracies)
            label = "-" if eps is None else f"{eps:g}"
            print(f"{mode:<12} {label:>8} {a.mean():>9.3f} ± {a.std():.3f} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
