"""McMahan et al. (2017), FedAvg with the 2NN on MNIST: rounds to reach 97% test accuracy.

Paper (Table 2, 2NN, E = 1, B = 10, C = 0.1, 100 clients): 87 rounds IID, 664 rounds with the
pathological non-IID split (2 label shards per client). The paper tunes the learning rate per
setting; we use one fixed rate (``--lr``) for both.

    .venv/bin/python benchmarks/fedavg_mnist.py            # both splits
    .venv/bin/python benchmarks/fedavg_mnist.py --split iid
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from simulations.engines import run_engine

PAPER = {"iid": 87, "shards": 664}
SCENARIO = {"iid": "mnist-iid", "shards": "mnist-shards"}


def rounds_to_target(split: str, lr: float, target: float, max_rounds: int, seed: int) -> dict:
    cfg = load_scenario(
        scenario_path(SCENARIO[split]),
        {
            "train.lr": lr,
            "train.rounds": max_rounds,
            "train.target-accuracy": target,
            "train.momentum": 0.0,
            "seed": seed,
        },
    )
    history: list[float] = []
    start = time.perf_counter()
    run_engine(cfg, lambda r: history.append(r["server-eval"]["accuracy"]))
    reached = next((i + 1 for i, a in enumerate(history) if a >= target), None)
    return {
        "split": split,
        "lr": lr,
        "seed": seed,
        "rounds_to_target": reached,
        "rounds_run": len(history),
        "final_accuracy": history[-1],
        "best_accuracy": max(history),
        "paper_rounds": PAPER[split],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["iid", "shards", "both"], default="both")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--max-rounds", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    splits = ["iid", "shards"] if args.split == "both" else [args.split]
    results = []
    for split in splits:
        res = rounds_to_target(split, args.lr, args.target, args.max_rounds, args.seed)
        results.append(res)
        print(
            f"{split:7} lr={res['lr']}: {res['rounds_to_target']} rounds to "
            f"{args.target:.0%} (paper {res['paper_rounds']}), final acc "
            f"{res['final_accuracy']:.4f}, {res['seconds']:.0f} s",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_write:
        from results_md import markdown_table, update_section

        rows = [
            [
                r["split"],
                r["lr"],
                r["rounds_to_target"] or f"not in {r['rounds_run']}",
                r["paper_rounds"],
                f"{r['final_accuracy']:.4f}",
                f"{r['seconds']:.0f}",
            ]
            for r in results
        ]
        table = markdown_table(
            [
                "split",
                "client lr",
                f"rounds to {args.target:.0%}",
                "paper",
                "accuracy then",
                "seconds",
            ],
            rows,
        )
        update_section(
            "fedavg-mnist",
            "McMahan et al. 2017, 2NN (784-200-200-10) on MNIST, "
            "100 clients, C = 0.1, E = 1, B = 10, plain SGD, seed "
            f"{args.seed}.\n\nCommand: `.venv/bin/python benchmarks/"
            f"fedavg_mnist.py`\n\n{table}",
        )


if __name__ == "__main__":
    main()
