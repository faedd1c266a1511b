"""FedAvg and FedAdam, fedcore against Flower, side by side: fedcore's run of task ``mlp``
(FedAvg on typed statistics, its server optimizer in :mod:`fedcore.optimizers`, the round
loop of :mod:`fedcore.server`) against Flower's own strategy and ``Strategy.start`` on the same
grid, clients and training (:mod:`simulations.flower_reference`).

The default configuration of ``make run`` (digits, 100 Dirichlet clients, 20 rounds), each run
in this process, the two alternating ``--repeats`` times; per cell the median wall seconds,
the final server accuracy and the largest difference between the two final models.

    .venv/bin/python benchmarks/fedavg_paths.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fedcore.arrays import load_into, to_numpy, to_record
from fedcore.config import RunConfig, parse_config
from fedcore.tasks import get_task, server_data
from fedcore.tasks.fedavg import SERVER
from simulations.engines.inprocess import run_inprocess
from simulations.flower_reference import run_flower

STRATEGIES = {"fedavg": {"name": "fedavg"}, "fedadam": {"name": "fedadam", "eta": 0.01}}


def accuracy(cfg: RunConfig, weights: dict[str, np.ndarray]) -> float:
    """The server's test accuracy of a final model."""
    task, data = get_task(cfg.task), server_data(get_task(cfg.task), cfg)
    model = task.build_model(cfg, data, torch.Generator().manual_seed(0))
    load_into(model, to_record(weights))
    return task.evaluate(model, data.x_test, data.y_test)["accuracy"]


def run(who: str, cfg: RunConfig) -> tuple[float, dict]:
    start = time.perf_counter()
    final = run_flower(cfg) if who == "flower" else run_inprocess(cfg, lambda record: None)
    seconds = time.perf_counter() - start
    return seconds, {k: to_numpy(final[k]) for k in final if not k.startswith(SERVER)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print("| strategy | run | wall s (median) | server accuracy | max abs difference to Flower |")
    print("|---|---|---|---|---|")
    for name, strategy in STRATEGIES.items():
        cfg = parse_config({"strategy": strategy, "train": {"rounds": args.rounds}})
        cells: dict[str, list] = {"flower": [], "fedcore": []}
        for _ in range(args.repeats):
            for who in cells:
                cells[who].append(run(who, cfg))
        reference = cells["flower"][0][1]
        for who, runs in cells.items():
            seconds = statistics.median(r[0] for r in runs)
            weights = runs[0][1]
            gap = max(float(np.max(np.abs(weights[k] - reference[k]))) for k in reference)
            print(f"| {name} | {who} | {seconds:.2f} | {accuracy(cfg, weights):.4f} | {gap:.1e} |")


if __name__ == "__main__":
    main()
