"""Round latency of the same scenario deployed on loopback and simulated in-process.

Scenario: digits, 3 clients (one SuperNode each, reading its own data file), MLP 64-32-10,
1 local epoch, no evaluation by clients, TLS and SuperNode authentication on. Deployed runs
start a SuperLink and three SuperNodes with ``simulations.deploy.LocalDeployment`` and run
``flwr run``; the latency is the median of the rounds after the first (the first also starts
every process). Two settings of what Flower lets us tune:

- ``Flower defaults`` (fedcore's default too): the ServerApp collects replies with Flower's
  ``send_and_receive`` (a check every 3 s) and the SuperExecs look for work every 1 s.
- ``tuned``: fedcore checks for replies every 0.1 s (``engine.poll-interval``) and the
  SuperExecs every 0.1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).

Both run the ClientApp as Flower 1.42 does, one fresh process per message (``subprocess``
isolation); fedcore's ClientApp imports torch and Opacus only when it trains (importing
``fedcore.apps`` went from 5.5 s to 0.75 s here), so a secure-aggregation stage starts fast.

    .venv/bin/python benchmarks/deploy_latency.py
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    rows = []
    for secagg in ("off", "full"):
        settings = BASE | {"secagg": {"mode": secagg}}
        with tempfile.TemporaryDirectory() as tmp:
            result = simulate(parse_config(settings), out=Path(tmp) / "sim", progress=False)
            first, median = _latency(result.path)
        rows.append([secagg, "inprocess simulation", f"{first:.2f}", f"{median:.3f}", "-"])
        print(" | ".join(rows[-1]), flush=True)
        for name, poll, task_poll in (("Flower defaults", 0.0, 1.0), ("tuned", 0.1, 0.1)):
            cfg = parse_config(settings | {"engine": {"poll-interval": poll}})
            start = time.perf_counter()
            with (
                tempfile.TemporaryDirectory() as tmp,
                LocalDeployment(Path(tmp), cfg, 3, task_poll=task_poll) as deployment,
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
            "epoch, 4 rounds, no client evaluation; deployed runs use TLS and SuperNode "
            "authentication on loopback. Latency: seconds per round, the first round and the "
            "median of the others. 'Flower defaults': Flower's `send_and_receive` (checks "
            "every 3 s), SuperExec task polling every 1 s; 'tuned': fedcore's exchange checks "
            "every 0.1 s (`engine.poll-interval`), SuperExec polling 0.1 s. The ClientApp runs "
            "in a fresh process per message in both (Flower 1.42's subprocess isolation).\n\n"
            "Command: `.venv/bin/python benchmarks/deploy_latency.py`\n\n"
            + markdown_table(
                ["secagg", "runtime", "first round s", "later rounds s (median)", "wall s"],
                rows,
            ),
        )


if __name__ == "__main__":
    main()
