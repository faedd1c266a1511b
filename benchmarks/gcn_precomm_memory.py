"""FedGCN's pre-communication, this tree against an older checkout, side by side: the
``cora-gcn`` scenario (10 clients, Louvain, epsilon 8) run in a fresh process per run, so
each process's peak memory is that run's. Reports test accuracy, wall time, the setup's time
and peak resident memory, interleaving the two trees ``--repeats`` times.

    .venv/bin/python benchmarks/gcn_precomm_memory.py --baseline /tmp/old --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_RUN = """
import json, logging, resource, time
logging.getLogger("flwr").setLevel(logging.ERROR)
from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from simulations.engines.inprocess import run_inprocess
cfg = load_scenario(scenario_path("cora-gcn"), {{"train.rounds": {rounds}, "seed": {seed}}})
records = []
start = time.perf_counter()
run_inprocess(cfg, records.append)
print(json.dumps({{
    "accuracy": records[-1]["server-eval"]["accuracy"],
    "seconds": time.perf_counter() - start,
    "setup-seconds": (records[0].get("setup") or {{}}).get("seconds"),
    "peak-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}}))
"""


def run(tree: Path, rounds: int, seed: int) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _RUN.format(rounds=rounds, seed=seed)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an older checkout")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this tree": Path(__file__).parents[1]}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for seed in range(args.repeats):
        for name, tree in trees.items():
            results[name].append(run(tree, args.rounds, seed))
            print(name, seed, results[name][-1], flush=True)
    print("| tree | accuracy | seconds | setup seconds | peak MB |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        cells = [statistics.mean(r[k] for r in rows) for k in ("accuracy", "seconds")]
        setup = [r["setup-seconds"] for r in rows if r["setup-seconds"] is not None]
        peak = max(r["peak-mb"] for r in rows)
        setup_cell = f"{statistics.mean(setup):.2f}" if setup else "-"
        print(f"| {name} | {cells[0]:.3f} | {cells[1]:.1f} | {setup_cell} | {peak:.0f} |")
    ratio = max(r["peak-mb"] for r in results["this tree"]) / max(
        r["peak-mb"] for r in results["baseline"]
    )
    print(f"peak memory, this tree / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
