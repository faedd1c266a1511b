"""What checkpointing every round costs: the same run with ``train.checkpoint-every = 1``
and ``0``, interleaved in one process, and the checkpoint's size.

Workloads: the default scenario (digits, 10 clients, MLP 64-200-200-10); MNIST with 100
clients (a larger model: 784-200-200-10, ~200k parameters, with FedAdam's two moment
buffers); the recommender on MovieLens-100K (every node's user factors in the checkpoint).
Each run's wall time includes loading its data; the figure is the median ratio over
``--repeats`` interleaved pairs.

    .venv/bin/python benchmarks/checkpoint.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from simulations.runner import simulate

WORKLOADS = {
    "digits, 10 clients": ("digits-dirichlet", {"train.rounds": 5}),
    "mnist, 100 clients, fedadam": (
        "mnist-iid",
        {
            "data.num-clients": 100,
            "train.rounds": 3,
            "train.fraction": 0.1,
            "strategy.name": "fedadam",
            "strategy.server-lr": 0.01,
        },
    ),
    "movielens-fcf (node states)": ("movielens-fcf", {"train.rounds": 3}),
}


def timed(scenario: str, overrides: dict, every: int, out: Path) -> tuple[float, int]:
    """Wall seconds of one run and the size of its checkpoint (the summary's)."""
    cfg = load_scenario(scenario_path(scenario), {**overrides, "train.checkpoint-every": every})
    start = time.perf_counter()
    summary = simulate(cfg, out=out, progress=False).summary
    return time.perf_counter() - start, summary.get("checkpoint_bytes", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (scenario, overrides) in WORKLOADS.items():
            ratios, with_ckpt, without, size = [], [], [], 0
            for r in range(args.repeats):
                off, _ = timed(scenario, overrides, 0, Path(tmp) / f"{name}-{r}-off")
                on, size = timed(scenario, overrides, 1, Path(tmp) / f"{name}-{r}-on")
                ratios.append(on / off)
                with_ckpt.append(on)
                without.append(off)
            row = {
                "workload": name,
                "seconds without": statistics.median(without),
                "seconds with": statistics.median(with_ckpt),
                "ratio": statistics.median(ratios),
                "checkpoint MB": size / 1e6,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| workload | run s, no checkpoint | run s, every round | ratio | checkpoint |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workload']} | {r['seconds without']:.2f} | {r['seconds with']:.2f} | "
            f"{r['ratio']:.3f} | {r['checkpoint MB']:.2f} MB |"
        )


if __name__ == "__main__":
    main()
