"""Peak memory per process of a deployed GCN run, with and without FedGCN's pre-communication.

A SuperLink and 3 SuperNodes on loopback (TLS, node authentication), ``flwr run``; Cora, 3
Louvain clients, 2 rounds. Every process the deployment starts (the SuperLink, each
SuperNode, the ServerApp and every ClientApp process, one per message) is sampled every
0.1 s; the table gives the largest resident set of each kind. The two modes alternate
``--repeats`` times; the medians are shown.

    FEDCORE_DATA=../shared/data .venv/bin/python benchmarks/deploy_memory.py --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from fedcore.config import parse_config
from simulations.deploy import LocalDeployment

KINDS = ("flower-superlink", "flower-supernode", "flwr-serverapp", "flwr-clientapp")


def _kind(process: psutil.Process) -> str | None:
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return None
    return next((k for k in KINDS if k in command), None)


def _sample(stop: threading.Event, peaks: dict[str, float]) -> None:
    """Largest RSS (MB) per kind of process among this process's descendants until stop."""
    root = psutil.Process()
    while not stop.is_set():
        for child in root.children(recursive=True):
            kind = _kind(child)
            if kind is None:
                continue
            try:
                rss = child.memory_info().rss / 2**20
            except psutil.Error:
                continue
            peaks[kind] = max(peaks.get(kind, 0.0), rss)
        time.sleep(0.1)


def run(mode: str, rounds: int) -> tuple[dict[str, float], float]:
    cfg = parse_config(
        {
            "task": "gcn",
            "data": {"dataset": "cora", "num-clients": 3, "partition": "louvain"},
            "model": {"hidden": [16]},
            "graph": {"mode": mode, "hops": 2},
            "train": {"rounds": rounds, "local-epochs": 3, "lr": 0.5, "momentum": 0.0},
            "engine": {"timeout": 120.0},
        }
    )
    peaks: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(stop, peaks), daemon=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, LocalDeployment(Path(tmp), cfg, 3) as d:
        sampler.start()
        try:
            d.run(Path(tmp) / "out")
        finally:
            stop.set()
            sampler.join()
    return peaks, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["local", "precomm"])
    args = parser.parse_args()
    results: dict[str, list[tuple[dict[str, float], float]]] = {m: [] for m in args.modes}
    for _ in range(args.repeats):
        for mode in results:
            results[mode].append(run(mode, args.rounds))
            peaks, seconds = results[mode][-1]
            print(mode, {k: round(v) for k, v in peaks.items()}, f"{seconds:.0f} s", flush=True)

    def median(mode: str, kind: str) -> float:
        return statistics.median(p.get(kind, 0.0) for p, _ in results[mode])

    heads = " | ".join(f"{m}: peak MB" for m in results)
    print(f"\n| process (largest of its kind) | {heads} |")
    print("|---|" + "---:|" * len(results))
    for kind in KINDS:
        print(f"| {kind} | " + " | ".join(f"{median(m, kind):.0f}" for m in results) + " |")
    for mode in results:
        print(f"{mode}: wall {statistics.median(s for _, s in results[mode]):.0f} s")


if __name__ == "__main__":
    main()
