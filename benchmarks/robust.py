"""Malicious clients: test accuracy of every defence under every attack, FLANDERS' setting.

Flower's FLANDERS baseline (``baselines/flanders``: MNIST, 100 clients, Dirichlet 0.5, every
client every round, one local epoch of batch 32, the MLP 784-128-10, 50 rounds) with 20 and
40 malicious clients. Its clients train with Adam at lr 0.001; ours train with fedcore's SGD
(lr 0.05, momentum 0.9), the MLP task's optimizer. Each cell is the server's test accuracy
after the last round (one seed); a defence that cannot run with that many malicious clients
(Bulyan needs n >= 4f + 3) is ``n/a``. Every defence assumes f = the true number of malicious
clients.

    .venv/bin/python benchmarks/robust.py --rounds 50                  # the full grid
    .venv/bin/python benchmarks/robust.py --rounds 5 --malicious 20    # what RESULTS.md has
    .venv/bin/python benchmarks/robust.py --only alie:bulyan --rounds 2  # one cell
    .venv/bin/python benchmarks/robust.py --tables cells.jsonl         # tables of a --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedcore.config import ConfigError, parse_config
from simulations.engines import run_engine

ATTACKS = ("none", "sign-flip", "gaussian", "label-flip", "scale", "alie", "ipm", "minmax")
# name -> the [strategy] table of the defence
DEFENCES = {
    "fedavg": {"name": "fedavg"},
    "fedmedian": {"name": "fedmedian"},
    "fedtrimmedavg": {"name": "fedtrimmedavg", "trim-beta": 0.2},
    "krum": {"name": "krum"},
    "multikrum": {"name": "multikrum"},
    "bulyan": {"name": "bulyan"},
    "centered-clipping": {"name": "centered-clipping", "cc-radius": 1.0, "cc-iterations": 3},
    "clip+fedavg": {"name": "fedavg", "server-clip-norm": 2.0},
    "nnm+fedmedian": {"name": "fedmedian", "pre-aggregation": "nnm"},
    "bucketing+centered-clipping": {
        "name": "centered-clipping",
        "pre-aggregation": "bucketing",
        "cc-radius": 1.0,
        "cc-iterations": 3,
    },
}
# the FLANDERS baseline's accuracies at 20 malicious clients (the anchors)
ANCHORS = {
    "fedavg": "0.17-0.67",
    "fedmedian": "0.59-0.80",
    "fedtrimmedavg": "0.52-0.86",
    "multikrum": "0.77-0.82",
    "bulyan": "0.82-0.84",
}


def config(attack: str, defence: str, malicious: int, rounds: int, seed: int):
    """The run of one cell; raises ConfigError where the defence cannot take ``malicious``."""
    strategy = dict(DEFENCES[defence])
    if strategy["name"] in ("krum", "multikrum", "bulyan") or "pre-aggregation" in strategy:
        strategy["num-malicious"] = malicious
    attacked = {"name": attack, "num-malicious": malicious} if attack != "none" else {}
    return parse_config(
        {
            "task": "mlp",
            "seed": seed,
            "data": {
                "dataset": "mnist",
                "num-clients": 100,
                "partition": "dirichlet",
                "alpha": 0.5,
            },
            "model": {"hidden": [128]},
            "train": {"rounds": rounds, "local-epochs": 1, "batch-size": 32, "fraction": 1.0},
            "evaluate": {"fraction": 0.0, "server": True},
            "strategy": strategy,
            "attack": attacked,
        }
    )


def run_cell(attack: str, defence: str, malicious: int, rounds: int, seed: int) -> dict:
    row = {"attack": attack, "defence": defence, "malicious": malicious, "rounds": rounds}
    try:
        cfg = config(attack, defence, malicious, rounds, seed)
    except ConfigError as err:
        return row | {"accuracy": None, "reason": str(err)}
    history: list[float] = []
    start = time.perf_counter()
    run_engine(cfg, lambda r: history.append(r["server-eval"]["accuracy"]))
    return row | {"accuracy": history[-1], "seconds": time.perf_counter() - start}


def table(results: list[dict], malicious: int) -> list[str]:
    """One Markdown table: a row per defence, a column per attack, and the worst attack."""
    cells = {
        (r["defence"], r["attack"]): r["accuracy"] for r in results if r["malicious"] == malicious
    }
    attacks = [a for a in ATTACKS if any((d, a) in cells for d in DEFENCES)]
    lines = [
        "| defence | " + " | ".join(attacks) + " | worst attack |",
        "|---|" + "---|" * (len(attacks) + 1),
    ]
    for d in DEFENCES:
        row = [cells.get((d, a)) for a in attacks]
        if all(v is None for v in row):
            if any((d, a) in cells for a in attacks):
                lines.append(f"| {d} | " + " | ".join("n/a" for _ in attacks) + " | n/a |")
            continue
        attacked = [v for a, v in zip(attacks, row, strict=True) if a != "none" and v is not None]
        worst = f"{min(attacked):.3f}" if attacked else "-"
        shown = ["-" if v is None else f"{v:.3f}" for v in row]
        lines.append(f"| {d} | " + " | ".join(shown) + f" | {worst} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--malicious", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--defences", nargs="+", default=list(DEFENCES), choices=list(DEFENCES))
    parser.add_argument("--only", help="one cell, attack:defence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="append each cell's result here (JSON lines)")
    parser.add_argument("--tables", type=Path, help="only print the tables of this --json file")
    args = parser.parse_args()
    if args.tables:
        done = [json.loads(line) for line in args.tables.read_text().splitlines()]
        for m in sorted({r["malicious"] for r in done}):
            rounds = sorted({r["rounds"] for r in done if r["malicious"] == m})
            print(f"\n{m} malicious of 100, {'/'.join(map(str, rounds))} rounds\n")
            print("\n".join(table(done, m)))
        return
    cells = [(a, d) for d in args.defences for a in args.attacks]
    if args.only:
        cells = [tuple(args.only.split(":"))]
    results = []
    for m in args.malicious:
        for attack, defence in cells:
            res = run_cell(attack, defence, m, args.rounds, args.seed)
            results.append(res)
            acc = "n/a" if res["accuracy"] is None else f"{res['accuracy']:.4f}"
            print(f"m={m} {attack:10} {defence:28} {acc} {res.get('seconds', 0):.0f} s", flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(res) + "\n")
    for m in args.malicious:
        print(f"\n{m} malicious of 100, {args.rounds} rounds\n")
        print("\n".join(table(results, m)))


if __name__ == "__main__":
    main()
