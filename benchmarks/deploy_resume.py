"""A restarted server continues a deployed run from its checkpoint, on real processes.

One SuperLink and two SuperNodes on loopback (TLS, node authentication). A 3-round run of
the MLP on digits with FedAvgM (server momentum to carry over) starts; once round 1 is
recorded, the SuperLink and its ServerApp are SIGKILLed. The SuperLink restarts on its
database with the nodes (``LocalDeployment.restart_superlink``) and
``LocalDeployment.run(resume=RUN_DIR)`` continues the run. Prints each step's time, the
resumed run's rounds and its largest difference from the in-process engine's uninterrupted
run (deployed runs equal it up to float32 rounding: replies are summed in arrival order).
Not in ``make test``: the restart alone waits about a minute for the SuperLink to let the
nodes' keys in again (two missed heartbeats), which the suite's 10 minutes cannot spare.

    .venv/bin/python benchmarks/deploy_resume.py
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fedcore.arrays import to_numpy
from fedcore.config import parse_config
from simulations.deploy import LocalDeployment
from simulations.engines.inprocess import run_inprocess

CFG = parse_config(
    {
        "data": {"num-clients": 2},
        "model": {"hidden": [16]},
        "evaluate": {"fraction": 0.0},
        "train": {"rounds": 3, "local-epochs": 1},
        "strategy": {"name": "fedavgm", "server-momentum": 0.9},
    }
)


def main() -> None:
    start = time.monotonic()

    def say(what: str) -> None:
        print(f"{time.monotonic() - start:7.1f} s  {what}", flush=True)

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalDeployment(Path(tmp), CFG, 2, node_files=False) as deployment,
    ):
        say("SuperLink and 2 SuperNodes up")
        errors: list[Exception] = []

        def first() -> None:
            try:
                deployment.run(cfg=CFG)
            except Exception as err:  # the crash
                errors.append(err)

        thread = threading.Thread(target=first)
        thread.start()
        run_dir = None
        while run_dir is None:
            current = deployment.current_run()
            if current is not None and (current / "checkpoint.bin").exists():
                run_dir = current
            time.sleep(0.2)
        say(f"round 1 recorded and checkpointed in {run_dir.name}")
        deployment.kill_superlink()
        thread.join()
        say(f"SuperLink and ServerApp killed; the first run ended: {type(errors[0]).__name__}")
        deployment.restart_superlink()
        say("SuperLink restarted on its database, nodes back")
        deployment.run(resume=run_dir)
        say("resumed run finished")
        summary = json.loads((run_dir / "summary.json").read_text())
        rounds = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        deployed = torch.load(run_dir / "model.pt", weights_only=True)
    simulated = run_inprocess(CFG, lambda record: None)
    gap = max(float(np.abs(deployed[k].numpy() - to_numpy(simulated[k])).max()) for k in deployed)
    print(
        json.dumps(
            {
                "status": summary["status"],
                "resumed_after_rounds": summary.get("resumed_after_rounds"),
                "rounds": [(r["round"], r["status"], r["aggregated-clients"]) for r in rounds],
                "max |deployed - in-process|": gap,
            }
        )
    )


if __name__ == "__main__":
    main()
