"""What the server process holds before round 1, side by side: its own data
(:func:`fedcore.tasks.server_data`: the model's shape and the held-out test set) against
what the server loaded before issue 15 (the task's ``load_data``: every client's partition).

Each measurement is a fresh process (its peak resident memory and seconds are that load's
alone); the two ways alternate ``--repeats`` times and the medians are printed.

    .venv/bin/python benchmarks/server_memory.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "mnist, 100 Dirichlet clients": {
        "data": {"dataset": "mnist", "partition": "dirichlet", "num-clients": 100}
    },
    "femnist, natural clients": {
        "data": {"dataset": "femnist", "partition": "natural", "num-clients": 105}
    },
    "cora gcn precomm, 10 Louvain clients": {
        "task": "gcn",
        "data": {"dataset": "cora", "partition": "louvain", "num-clients": 10},
        "graph": {"mode": "precomm"},
    },
}

_LOAD = """
import json, resource, sys, time
import torch
from fedcore.config import parse_config
from fedcore.tasks import ServerData, get_task, server_data
cfg = parse_config(json.loads(sys.argv[1]))
task = get_task(cfg.task)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
new = sys.argv[2] == "server_data"
data = server_data(task, cfg) if new else ServerData.of(task.load_data(cfg))
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "peak-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "import-mb": base,
}))
"""


def measure(settings: dict, how: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, json.dumps(settings), how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        "| case | after imports MB | load_data: peak MB | server_data: peak MB | ratio "
        "| seconds (old / new) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, settings in CASES.items():
        runs = {"load_data": [], "server_data": []}
        for _ in range(args.repeats):
            for how in runs:
                runs[how].append(measure(settings, how))
        old, new = (
            {
                k: statistics.median(r[k] for r in runs[how])
                for k in ("peak-mb", "seconds", "import-mb")
            }
            for how in ("load_data", "server_data")
        )
        print(
            f"| {name} | {new['import-mb']:.0f} | {old['peak-mb']:.0f} | {new['peak-mb']:.0f} | "
            f"{new['peak-mb'] / old['peak-mb']:.2f} | {old['seconds']:.2f} / {new['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
