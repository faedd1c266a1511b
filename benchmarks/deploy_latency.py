"""Round latency of the same scenario deployed on loopback and simulated in-process.

Scenario: digits, 3 clients (one SuperNode each, reading its own data file), MLP 64-32-10,
1 local epoch, no evaluation by clients, TLS and SuperNode authentication on. Deployed runs
start a SuperLink and three SuperNodes with ``simulations.deploy.LocalDeployment`` and run
``flwr run``; the latency is the median of the rounds after the first (the first also starts
every process). Each row adds one change to the one above, so each row's gain is that
change's:

1. ``Flower 1.42 as shipped``: a fresh ``flwr-clientapp`` process per message (subprocess
   isolation), Flower's ``send_and_receive`` (checks for replies every 3 s), SuperNodes that
   look for messages every 3 s.
2. ``+ warm executor``: SuperNodes in ``process`` isolation, each beside a
   ``fedcore warm-exec`` that runs its messages in one long-lived process.
3. ``+ server polls 0.1 s``: fedcore's exchange checks for replies every 0.1 s
   (``engine.poll-interval``).
4. ``+ node polls 0.2 s``: SuperNodes started by ``fedcore.supernode``, which look for
   messages every 0.2 s and pull a message's content without Flower's 1 s backoff
   (fedcore's defaults: ``fedcore deploy-local`` runs this).

    .venv/bin/python benchmarks/deploy_latency.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fedcore.config import parse_config
from simulations.deploy import LocalDeployment
from simulations.runner import simulate

BASE = {
    "data": {"num-clients": 3},
    "model": {"hidden": [32]},
    "train": {"rounds": 4, "local-epochs": 1},
    "evaluate": {"fraction": 0.0},
}


def _latency(run_dir: Path) -> tuple[float, float]:
    rounds = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rounds]
    return seconds[0], statistics.median(seconds[1:])


SETTINGS = (  # name, LocalDeployment options, engine.poll-interval
    ("Flower 1.42 as shipped", {"warm": False, "node_poll": None, "heartbeat": None}, 0.0),
    ("+ warm executor", {"warm": True, "node_poll": None, "heartbeat": None}, 0.0),
    ("+ server polls 0.1 s", {"warm": True, "node_poll": None, "heartbeat": None}, 0.1),
    ("+ node polls 0.2 s", {"warm": True, "node_poll": 0.2, "heartbeat": 10.0}, 0.1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--secagg", nargs="+", default=["off", "full"])
    args = parser.parse_args()
    rows = []
    for secagg in args.secagg:
        settings = BASE | {"secagg": {"mode": secagg}}
        settings["train"] = settings["train"] | {"rounds": args.rounds}
        with tempfile.TemporaryDirectory() as tmp:
            result = simulate(parse_config(settings), out=Path(tmp) / "sim", progress=False)
            first, median = _latency(result.path)
        rows.append([secagg, "inprocess simulation", f"{first:.2f}", f"{median:.3f}", "-"])
        print(" | ".join(rows[-1]), flush=True)
        for name, options, poll in SETTINGS:
            cfg = parse_config(settings | {"engine": {"poll-interval": poll}})
            start = time.perf_counter()
            with (
                tempfile.TemporaryDirectory() as tmp,
                LocalDeployment(Path(tmp), cfg, 3, **options) as deployment,
            ):
                first, median = _latency(deployment.run(Path(tmp) / "run"))
            wall = time.perf_counter() - start
            rows.append(
                [secagg, f"deployed, {name}", f"{first:.2f}", f"{median:.2f}", f"{wall:.0f}"]
            )
            print(" | ".join(rows[-1]), flush=True)
    if not args.no_write:
        from results_md import markdown_table, update_section

        update_section(
            "deploy-latency",
            "Digits, 3 clients (a SuperNode each, on its own data file), MLP 64-32-10, 1 local "
            f"epoch, {args.rounds} rounds, no client evaluation; deployed runs use TLS and "
            "SuperNode "
            "authentication on loopback. Latency: seconds per round, the first round and the "
            "median of the others. Each deployed row adds one change to the row above it: "
            "Flower 1.42 as shipped (a fresh ClientApp process per message, replies checked "
            "every 3 s, SuperNodes looking for messages every 3 s); a warm executor per node "
            "(`fedcore warm-exec`, nodes in `process` isolation); the server checking for "
            "replies every 0.1 s (`engine.poll-interval`); SuperNodes looking every 0.2 s and "
            "pulling content without Flower's 1 s backoff (`fedcore.supernode`).\n\n"
            f"Command: `.venv/bin/python benchmarks/deploy_latency.py --rounds {args.rounds}`\n\n"
            + markdown_table(
                ["secagg", "runtime", "first round s", "later rounds s (median)", "wall s"],
                rows,
            ),
        )


if __name__ == "__main__":
    main()
