"""Communication compression (issue 18): rounds to 97% and the bytes spent, McMahan's 2NN.

MNIST, 100 clients, C = 0.1, E = 1, B = 10, the 2NN (784-200-200-10), FedAvg with fedcore's
client SGD (lr 0.05, momentum 0.9), seed 0 (--seed): scenarios ``mnist-iid`` and ``mnist-shards`` (2
label shards per client), ``train.target-accuracy = 0.97`` (a run stops at the first round
whose server test accuracy reaches it) and a ``--max-rounds`` cap. One row per uplink
compressor (error feedback on, the default); the downlink is the fp32 model in every row.
Bytes are the serialized Flower messages of every round up to and including the one that
reached 97% (``bytes-received``: uplink, ``bytes-sent``: downlink). The goals: 97% with
>= 8x fewer uplink bytes than fp32 at <= 1.1x its rounds, and >= 32x fewer at <= 1.5x.

Under secure aggregation only qsgd composes, as the secure sum's own encoding at
``compression.bits`` bits in a 16-bit modulus, and only under local DP (the configuration
says why): the ``q8-secagg`` row records the refusal of the FedAvg row without DP, and
``--secagg-rounds`` rounds are timed of plain fp32, of secure aggregation under local DP
(fp32 encoding, ``secagg.frac-bits``) and of the same with qsgd 8-bit.

    export FEDCORE_DATA=/work/shared/data
    .venv/bin/python benchmarks/compression.py --json out.jsonl             # IID, all rows
    .venv/bin/python benchmarks/compression.py --partition shards --max-rounds 300 \\
        --rows fp32 q8 q4 top10 --json out.jsonl
    .venv/bin/python benchmarks/compression.py --rows q2 --blocks 0 64 256 1024 \\
        --max-rounds 20 --no-target --json out.jsonl                         # pick a block
    .venv/bin/python benchmarks/compression.py --rows q8-secagg --json out.jsonl  # + timing
    .venv/bin/python benchmarks/compression.py --max-rounds 2 --rows fp32 q8  # a smoke run
    .venv/bin/python benchmarks/compression.py --tables out.jsonl           # tables only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedcore.cli import scenario_path
from fedcore.config import ConfigError, RunConfig, load_scenario
from simulations.engines import run_engine

TARGET = 0.97
SCENARIOS = {"iid": "mnist-iid", "shards": "mnist-shards"}
BLOCK = 256  # qsgd's entries per scale: the best of the --blocks probe in compression.md
# row -> (label, the [compression] table; "block" is filled in for qsgd)
ROWS = {
    "fp32": ("fp32", {}),
    "q8": ("qsgd 8-bit", {"uplink": "qsgd", "bits": 8}),
    "q4": ("qsgd 4-bit", {"uplink": "qsgd", "bits": 4}),
    "q2": ("qsgd 2-bit", {"uplink": "qsgd", "bits": 2}),
    "top10": ("top-10%", {"uplink": "topk", "fraction": 0.1}),
    "top1": ("top-1%", {"uplink": "topk", "fraction": 0.01}),
    "q8-secagg": ("qsgd 8-bit + secagg", {"uplink": "qsgd", "bits": 8}),
}


def config(
    partition: str, row: str, block: int, max_rounds: int, seed: int, target: float
) -> RunConfig:
    """The run of one row; raises ConfigError where fedcore refuses the combination."""
    compression = dict(ROWS[row][1])
    if compression.get("uplink") == "qsgd":
        compression["block"] = block
    overrides = {
        "seed": seed,
        "train.rounds": max_rounds,
        "train.target-accuracy": target,
        **{f"compression.{k}": v for k, v in compression.items()},
    }
    if row == "q8-secagg":
        overrides["secagg.mode"] = "full"
    return load_scenario(scenario_path(SCENARIOS[partition]), overrides)


def summarize(records: list[dict], target: float) -> dict:
    """Rounds to ``target`` and what the rounds up to it cost (all rounds if not reached)."""
    accuracy = [r["server-eval"]["accuracy"] for r in records]
    reached = next((i + 1 for i, a in enumerate(accuracy) if target and a >= target), None)
    spent = records[:reached] if reached else records
    return {
        "rounds_to_target": reached,
        "rounds_run": len(records),
        "uplink_bytes": sum(r["bytes-received"] for r in spent),
        "downlink_bytes": sum(r["bytes-sent"] for r in spent),
        "uplink_bytes_per_round": sum(r["bytes-received"] for r in records) / len(records),
        "mean_round_seconds": sum(r["seconds"] for r in records) / len(records),
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy),
        "aggregated_rounds": sum(r["status"] == "aggregated" for r in records),
        "accuracy_by_round": [round(a, 4) for a in accuracy],
    }


def run_row(partition: str, row: str, block: int, max_rounds: int, seed: int, target: float):
    """One configuration's result (a refused one: its error message)."""
    label, compression = ROWS[row]
    result = {
        "study": "rows",
        "partition": partition,
        "row": row,
        "label": label,
        "block": block if compression.get("uplink") == "qsgd" else None,
        "max_rounds": max_rounds,
        "target": target,
        "seed": seed,
    }
    try:
        cfg = config(partition, row, block, max_rounds, seed, target)
    except ConfigError as err:
        return result | {"refused": str(err)}
    result |= {"lr": cfg.train.lr, "momentum": cfg.train.momentum}
    records: list[dict] = []
    start = time.perf_counter()
    run_engine(cfg, records.append)
    return result | summarize(records, target) | {"seconds": time.perf_counter() - start}


def time_secagg(partition: str, rounds: int, seed: int) -> list[dict]:
    """``rounds`` rounds of fp32 FedAvg without, then with, full secure aggregation (no
    target: every round runs): the reference a compressed secure-aggregation row would have."""
    results = []
    local = {"privacy.dp": "local", "privacy.clip-norm": 1.0, "privacy.noise-multiplier": 0.1}
    q8 = {"compression.uplink": "qsgd", "compression.bits": 8, "compression.error-feedback": False}
    variants = {
        "off": {},
        "full, local DP": {"secagg.mode": "full", **local},
        "full, local DP, qsgd 8-bit": {"secagg.mode": "full", **local, **q8},
    }
    for mode, overrides in variants.items():
        cfg = load_scenario(
            scenario_path(SCENARIOS[partition]),
            {"seed": seed, "train.rounds": rounds, **overrides},
        )
        records: list[dict] = []
        run_engine(cfg, records.append)
        seconds = [r["seconds"] for r in records]
        results.append(
            {
                "study": "secagg-time",
                "partition": partition,
                "secagg": mode,
                "rounds": rounds,
                "mean_round_seconds": sum(seconds) / len(seconds),
                # round 1 also pays one-off costs (lazy imports, warm-up)
                "mean_round_seconds_after_first": (
                    sum(seconds[1:]) / (len(seconds) - 1) if len(seconds) > 1 else None
                ),
                "uplink_bytes_per_round": sum(r["bytes-received"] for r in records) / rounds,
                "downlink_bytes_per_round": sum(r["bytes-sent"] for r in records) / rounds,
                "final_accuracy": records[-1]["server-eval"]["accuracy"],
            }
        )
    return results


# --- tables --------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def rows_table(results: list[dict], partition: str) -> list[str]:
    """One Markdown table of a partition's rows, with the ratios to its fp32 row."""
    mine = [r for r in results if r["study"] == "rows" and r["partition"] == partition]
    fp32 = next((r for r in mine if r["row"] == "fp32" and "refused" not in r), None)
    lines = [
        "| uplink | rounds to 97% | uplink MB | downlink MB | uplink / round | "
        "fp32 uplink / this | rounds / fp32 | mean round s | final acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in mine:
        name = r["label"] + (f" (block {r['block']})" if r["block"] is not None else "")
        if "refused" in r:
            lines.append(f"| {name} | refused (not yet composable) | - | - | - | - | - | - | - |")
            continue
        reached = r["rounds_to_target"]
        rounds = str(reached) if reached else f"not reached within {r['rounds_run']}"
        bytes_ratio = rounds_ratio = "-"
        if fp32 and fp32["rounds_to_target"] and reached:
            bytes_ratio = f"{fp32['uplink_bytes'] / r['uplink_bytes']:.1f}x"
            rounds_ratio = f"{reached / fp32['rounds_to_target']:.2f}x"
        per_round = f"{_mb(r['uplink_bytes_per_round'])} MB"
        if fp32:
            per_round += f" ({fp32['uplink_bytes_per_round'] / r['uplink_bytes_per_round']:.1f}x)"
        lines.append(
            f"| {name} | {rounds} | {_mb(r['uplink_bytes'])} | {_mb(r['downlink_bytes'])} | "
            f"{per_round} | {bytes_ratio} | {rounds_ratio} | {r['mean_round_seconds']:.2f} | "
            f"{r['final_accuracy']:.4f} |"
        )
    return lines


def goals(results: list[dict], partition: str) -> list[str]:
    """Which rows meet each of the issue's two goals, against the partition's fp32 row."""
    mine = [r for r in results if r["study"] == "rows" and r["partition"] == partition]
    fp32 = next((r for r in mine if r["row"] == "fp32" and r.get("rounds_to_target")), None)
    if fp32 is None:
        return ["goals: not assessable (fp32 did not reach 97%)"]
    lines = []
    for factor, slack in ((8, 1.1), (32, 1.5)):
        met = [
            f"{r['label']} ({fp32['uplink_bytes'] / r['uplink_bytes']:.1f}x in total, "
            f"{fp32['uplink_bytes_per_round'] / r['uplink_bytes_per_round']:.1f}x a round, "
            f"{r['rounds_to_target']} rounds)"
            for r in mine
            if r.get("rounds_to_target")
            and fp32["uplink_bytes"] / r["uplink_bytes"] >= factor
            and r["rounds_to_target"] <= slack * fp32["rounds_to_target"]
        ]
        verdict = f"**met** by {', '.join(met)}" if met else "**not met**"
        lines.append(f"- >= {factor}x fewer uplink bytes at <= {slack}x the rounds: {verdict}")
    return lines


def probe_table(results: list[dict]) -> list[str]:
    """The --blocks probe: accuracy after a fixed number of rounds per qsgd block."""
    probe = [r for r in results if r["study"] == "rows" and not r["target"]]
    lines = [
        "| partition | uplink | block | rounds | uplink / round | final acc | best acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in probe:
        lines.append(
            f"| {r['partition']} | {r['label']} | {r['block']} | {r['rounds_run']} | "
            f"{_mb(r['uplink_bytes_per_round'])} MB | {r['final_accuracy']:.4f} | "
            f"{r['best_accuracy']:.4f} |"
        )
    return lines


def secagg_table(results: list[dict]) -> list[str]:
    timed = [r for r in results if r["study"] == "secagg-time"]
    lines = [
        "| partition | secagg | rounds | mean round s | after round 1 | uplink MB / round | "
        "downlink MB / round |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in timed:
        later = r["mean_round_seconds_after_first"]
        lines.append(
            f"| {r['partition']} | {r['secagg']} | {r['rounds']} | "
            f"{r['mean_round_seconds']:.2f} | {'-' if later is None else f'{later:.2f}'} | "
            f"{_mb(r['uplink_bytes_per_round'])} | {_mb(r['downlink_bytes_per_round'])} |"
        )
    return lines


def print_tables(results: list[dict]) -> None:
    targeted = [r for r in results if r.get("target")]  # rows run to 97%, refusals included
    for partition in SCENARIOS:
        for seed in sorted({r["seed"] for r in targeted if r["partition"] == partition}):
            mine = [r for r in targeted if r["seed"] == seed]
            print(f"\n{partition}, seed {seed}, target {TARGET}\n")
            print("\n".join(rows_table(mine, partition)))
            print()
            print("\n".join(goals(mine, partition)))
    for r in results:
        if "refused" in r:
            print(f"\n{r['label']} ({r['partition']}) refused: {r['refused']}")
    if any(r["study"] == "rows" and not r["target"] for r in results):
        print("\nqsgd block probe (no target)\n")
        print("\n".join(probe_table(results)))
    if any(r["study"] == "secagg-time" for r in results):
        print("\nsecure aggregation round time (fp32)\n")
        print("\n".join(secagg_table(results)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", choices=list(SCENARIOS), default="iid")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--blocks", type=int, nargs="+", default=[BLOCK], help="qsgd blocks")
    parser.add_argument("--max-rounds", type=int, default=150)
    parser.add_argument("--no-target", action="store_true", help="run every round (a probe)")
    parser.add_argument("--secagg-rounds", type=int, default=5, help="with q8-secagg; 0: none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="append each result here (JSON lines)")
    parser.add_argument("--tables", type=Path, help="only print the tables of this --json file")
    args = parser.parse_args()
    if args.tables:
        print_tables([json.loads(line) for line in args.tables.read_text().splitlines()])
        return
    target = 0.0 if args.no_target else TARGET
    jobs = [
        (row, block)
        for row in args.rows
        for block in (args.blocks if ROWS[row][1].get("uplink") == "qsgd" else [BLOCK])
    ]
    results = []
    for row, block in jobs:
        found = [run_row(args.partition, row, block, args.max_rounds, args.seed, target)]
        if row == "q8-secagg" and args.secagg_rounds:
            found += time_secagg(args.partition, args.secagg_rounds, args.seed)
        for res in found:
            results.append(res)
            print(json.dumps(res), flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(res) + "\n")
    print_tables(results)


if __name__ == "__main__":
    main()
