"""Worker processes of the in-process engine: the speed-up of ``engine.workers = 2`` over one
worker on a compute-bound run, and whether the two end on the same model bit for bit.

Workload: the default scenario's MLP (64-200-200-10) on digits, IID, 20 clients, every client
training every round (10 local epochs, batch 16), 10 rounds, no evaluation: training
dominates. Each run is a fresh process (torch at one thread per worker); two times: the
whole run (the worker processes' start, about 4 s on 2 cores, included) and its rounds after
the first (the first also warms each worker's torch up: what a longer run pays per round);
best of ``--repeats`` interleaved runs.

    .venv/bin/python benchmarks/engine_workers.py [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time

import numpy as np

from fedcore.cli import scenario_path
from fedcore.config import RunConfig, load_scenario


def workload(workers: int) -> RunConfig:
    return load_scenario(
        scenario_path("digits-dirichlet"),
        {
            "data.num-clients": 20,
            "data.partition": "iid",
            "data.local-test-fraction": 0.0,
            "train.rounds": 10,
            "train.local-epochs": 10,
            "evaluate.fraction": 0.0,
            "evaluate.server": False,
            "engine.workers": workers,
            "engine.threads": 1,
        },
    )


def child(workers: int) -> None:
    import torch

    torch.set_num_threads(1)
    from simulations.engines import run_engine

    cfg = workload(workers)
    rounds: list[float] = []
    start = time.perf_counter()
    arrays = run_engine(cfg, lambda record: rounds.append(record["seconds"]))
    seconds = time.perf_counter() - start
    digest = hashlib.sha256()
    for key in sorted(arrays.keys()):
        digest.update(np.ascontiguousarray(arrays[key].numpy()).tobytes())
    print(json.dumps({"seconds": seconds, "rounds": sum(rounds[1:]), "sha256": digest.hexdigest()}))


def measure(workers: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    runs: dict[int, list[dict]] = {1: [], args.workers: []}
    for _ in range(args.repeats):
        for workers in runs:
            runs[workers].append(measure(workers))
            print(workers, runs[workers][-1], flush=True)
    best = {w: min(r["seconds"] for r in rs) for w, rs in runs.items()}
    rounds = {w: min(r["rounds"] for r in rs) for w, rs in runs.items()}
    digests = {r["sha256"] for rs in runs.values() for r in rs}
    rows = [
        [
            str(w),
            f"{best[w]:.2f}",
            f"{best[1] / best[w]:.2f}x",
            f"{rounds[w]:.2f}",
            f"{rounds[1] / rounds[w]:.2f}x",
            runs[w][0]["sha256"][:16],
        ]
        for w in runs
    ]
    note = (
        f"{args.workers} workers / 1: {best[1] / best[args.workers]:.2f}x on the whole run, "
        f"{rounds[1] / rounds[args.workers]:.2f}x on its rounds (target >= 1.8x); the same "
        f"model bit for bit in every run: {len(digests) == 1}"
    )
    print(note)
    if not args.no_write:
        from results_md import markdown_table, update_section

        update_section(
            "engine-workers",
            "The in-process engine's worker processes on a compute-bound run: digits, MLP "
            "64-200-200-10, 20 clients, IID, 10 local epochs, 10 rounds, no evaluation; one "
            "torch thread per worker; the whole run (the workers' start included) and the sum "
            "of its rounds' seconds after the first; "
            f"best of {args.repeats} interleaved runs, each a fresh process.\n\n"
            f"Command: `.venv/bin/python benchmarks/engine_workers.py --repeats "
            f"{args.repeats}`\n\n"
            + markdown_table(
                ["workers", "run s", "speed-up", "rounds 2-10 s", "speed-up", "model sha256"], rows
            )
            + f"\n\n- {note}",
        )


if __name__ == "__main__":
    main()
