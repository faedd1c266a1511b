"""FedAvg and FedAdam on two paths, side by side: task ``mlp`` (model updates aggregated by
Flower's strategies) against task ``mlp-fedavg`` (the same model and training as an algorithm on
typed statistics, its server optimizer in :mod:`fedcore.optimizers`).

The default configuration of ``make run`` (digits, 100 Dirichlet clients, 20 rounds), each run
in this process, the paths alternating ``--repeats`` times; per cell the median wall seconds,
the final server accuracy, the bytes the server sent and received in the last round, and the largest
difference between the two paths' final models.

    .venv/bin/python benchmarks/fedavg_paths.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedcore.arrays import to_numpy
from fedcore.config import parse_config
from fedcore.tasks.fedavg import SERVER
from simulations.engines.inprocess import run_inprocess

STRATEGIES = {"fedavg": {"name": "fedavg"}, "fedadam": {"name": "fedadam", "eta": 0.01}}


def run(task: str, strategy: dict, rounds: int) -> tuple[float, dict, dict]:
    cfg = parse_config({"task": task, "strategy": strategy, "train": {"rounds": rounds}})
    records: list[dict] = []
    start = time.perf_counter()
    final = run_inprocess(cfg, records.append)
    seconds = time.perf_counter() - start
    weights = {k: to_numpy(final[k]) for k in final if not k.startswith(SERVER)}
    return seconds, records[-1], weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(
        "| strategy | task | wall s (median) | server accuracy | KB sent / round | "
        "KB received / round | max abs difference to mlp |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, strategy in STRATEGIES.items():
        cells: dict[str, list] = {"mlp": [], "mlp-fedavg": []}
        for _ in range(args.repeats):
            for task in cells:
                cells[task].append(run(task, strategy, args.rounds))
        reference = cells["mlp"][0][2]
        for task, runs in cells.items():
            seconds = statistics.median(r[0] for r in runs)
            last, weights = runs[0][1], runs[0][2]
            gap = max(float(np.max(np.abs(weights[k] - reference[k]))) for k in reference)
            print(
                f"| {name} | {task} | {seconds:.2f} | {last['server-eval']['accuracy']:.4f} | "
                f"{last['bytes-sent'] / 1e3:.1f} | {last['bytes-received'] / 1e3:.1f} | "
                f"{gap:.1e} |"
            )


if __name__ == "__main__":
    main()
