"""FedGCN's pre-communication on deployed SuperNodes: a SuperLink and 3 SuperNodes on
loopback (TLS, node authentication), ``flwr run``; Cora, 3 Louvain clients, epsilon 8, 2
rounds. Prints the setup's record (its secure sum's stages) and the server's evaluation.

    FEDCORE_DATA=../shared/data .venv/bin/python benchmarks/deploy_gcn_precomm.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedcore.config import parse_config
from simulations.deploy import LocalDeployment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = parse_config(
        {
            "task": "gcn",
            "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": "precomm", "hops": 2},
            "train": {"rounds": args.rounds, "local-epochs": 3, "lr": 0.5, "momentum": 0.0},
            "engine": {"timeout": 120.0},
        }
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, LocalDeployment(Path(tmp), cfg, 3) as d:
        path = d.run(Path(tmp) / "out")
        lines = (path / "metrics.jsonl").read_text().splitlines()
    rounds = [json.loads(line) for line in lines]
    print("setup:", rounds[0].get("setup"))
    print("server-eval:", rounds[-1].get("server-eval"))
    print(f"wall seconds: {time.perf_counter() - start:.0f}")


if __name__ == "__main__":
    main()
