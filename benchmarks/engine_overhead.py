"""Engine overhead: the same federated workload as a bare PyTorch loop, on the ``inprocess``
engine, and on Flower's ``ray`` engine, each in its own process, side by side in one run.

Workload: the default scenario's MLP (64-200-200-10) on digits, IID split, every client
trains every round (3 local epochs, batch 16, SGD momentum 0.9), FedAvg; no evaluation, so
only training and its messaging are timed. Wall time covers the federated rounds (data is
loaded before the clock starts, except in Ray's actors, which load it themselves); the time
is the best of ``--repeats`` interleaved runs, each in a fresh process; memory is the peak
resident set of the whole process tree, sampled every 20 ms.

    .venv/bin/python benchmarks/engine_overhead.py             # all workloads, writes RESULTS.md
    .venv/bin/python benchmarks/engine_overhead.py --no-ray    # skip the slow Ray runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import psutil
import torch

from fedcore import seeding
from fedcore.cli import scenario_path
from fedcore.config import RunConfig, load_scenario
from fedcore.tasks.classification import load_federated
from fedcore.tasks.mlp import mlp

WORKLOADS = [(100, 3), (1000, 1)]


SCALE = [(10_000, 1)]  # --scale: cross-device, MNIST (issue 19)


def workload(clients: int, rounds: int, engine: str = "inprocess") -> RunConfig:
    overrides = {
        "data.num-clients": clients,
        "data.partition": "iid",
        "data.local-test-fraction": 0.0,
        "train.rounds": rounds,
        "evaluate.fraction": 0.0,
        "evaluate.server": False,
        "engine.name": engine,
    }
    if clients < 10_000:
        return load_scenario(scenario_path("digits-dirichlet"), overrides)
    # 10,000 MNIST clients of 6 examples: one local step each (batch 10), 784-200-200-10
    overrides |= {"train.fraction": 1.0, "train.local-epochs": 1, "train.batch-size": 10}
    return load_scenario(scenario_path("mnist-iid"), overrides)


def bare_loop(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """FedAvg written directly in PyTorch: no messages, no framework."""
    data = load_federated(cfg.data, cfg.seed)
    model = mlp(
        data.num_features,
        cfg.model.hidden,
        data.num_classes,
        seeding.torch_generator(cfg.seed, seeding.MODEL_INIT),
    )
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    t = cfg.train
    for server_round in range(1, t.rounds + 1):
        sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        total = 0
        for pid, client in enumerate(data.clients):
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum)
            rng = seeding.client_generator(cfg.seed, server_round, pid)
            n = client.num_train
            for _ in range(t.local_epochs):
                order = torch.randperm(n, generator=rng)
                for begin in range(0, n, t.batch_size):
                    idx = order[begin : begin + t.batch_size]
                    loss = torch.nn.functional.cross_entropy(
                        model(client.x_train[idx]), client.y_train[idx]
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for k, v in model.state_dict().items():
                sums[k] += n * v.double()
            total += n
        global_state = {k: (v / total).to(global_state[k].dtype) for k, v in sums.items()}
    return global_state


def child(kind: str, clients: int, rounds: int) -> None:
    """Run one contestant and print its wall time and final model checksum as JSON."""
    torch.set_num_threads(1)
    cfg = workload(clients, rounds, "ray" if kind == "ray" else "inprocess")
    from simulations.engines import run_engine  # imports, data and torch warm-up: untimed
    from simulations.engines.inprocess import run_inprocess  # noqa: F401  (its imports too)

    load_federated(cfg.data, cfg.seed)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # pays torch's lazy imports
    start, cpu_start = time.perf_counter(), time.process_time()
    if kind == "bare":
        state = {k: v.numpy() for k, v in bare_loop(cfg).items()}
    else:
        arrays = run_engine(cfg, lambda record: None)
        state = {k: v.numpy() for k, v in arrays.items()}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    checksum = float(sum(np.abs(v).sum() for v in state.values()))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "checksum": checksum}))


def measure(kind: str, clients: int, rounds: int) -> dict:
    """Run a contestant in a fresh process; sample the process tree's memory meanwhile."""
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--clients",
            str(clients),
            "--rounds",
            str(rounds),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"{kind} run failed with exit code {proc.returncode}")
    return {**json.loads(out[-1]), "peak_mb": peak / 2**20, "kind": kind}


def compare(clients: int, rounds: int, repeats: int, with_ray: bool) -> dict[str, dict]:
    """Best-of-``repeats`` wall and CPU time per contestant, runs interleaved so drifting
    machine load hits all alike (Ray, far slower, runs once)."""
    kinds = ["bare", "inprocess"] + (["ray"] if with_ray else [])
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for i in range(repeats):
        for k in kinds:
            if k != "ray" or i == 0:
                runs[k].append(measure(k, clients, rounds))
    return {
        k: {
            "seconds": min(r["seconds"] for r in v),
            "cpu_seconds": min(r["cpu_seconds"] for r in v),
            "peak_mb": max(r["peak_mb"] for r in v),
            "checksum": v[0]["checksum"],
        }
        for k, v in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["bare", "inprocess", "ray"])
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="runs per contestant (best)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument(
        "--scale", action="store_true", help="10,000 MNIST clients a round instead (no Ray)"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.clients, args.rounds)
        return
    if args.scale:
        args.no_ray = True
    rows, notes = [], []
    for clients, rounds in SCALE if args.scale else WORKLOADS:
        res = compare(clients, rounds, args.repeats, not args.no_ray)
        bare = res["bare"]
        for kind, r in res.items():
            cpu = f"{r['cpu_seconds']:.2f}" + (" (driver only)" if kind == "ray" else "")
            rows.append(
                [
                    f"{clients} x {rounds}",
                    kind,
                    f"{r['seconds']:.2f}",
                    f"{r['seconds'] / bare['seconds']:.2f}x",
                    cpu,
                    f"{r['cpu_seconds'] / bare['cpu_seconds']:.2f}x",
                    f"{r['peak_mb']:.0f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
        ours = res["inprocess"]
        same = abs(bare["checksum"] - ours["checksum"]) <= 1e-4 * abs(bare["checksum"])
        note = (
            f"{clients} x {rounds}: inprocess / bare = {ours['seconds'] / bare['seconds']:.2f}"
            f" wall, {ours['cpu_seconds'] / bare['cpu_seconds']:.2f} CPU (target <= "
            f"{1.5 if clients >= 10_000 else 1.25}); "
            f"same final model as the bare loop: {same}"
        )
        if "ray" in res:
            note += (
                f"; ray / inprocess = {res['ray']['seconds'] / ours['seconds']:.1f} (target >= 10)"
            )
        notes.append(note)
        print(note, flush=True)
    if not args.no_write:
        from results_md import markdown_table, update_section

        table = markdown_table(
            [
                "clients x rounds",
                "engine",
                "wall s",
                "wall vs bare",
                "CPU s",
                "CPU vs bare",
                "peak MB (process tree)",
            ],
            rows,
        )
        update_section(
            "engine-overhead-scale" if args.scale else "engine-overhead",
            (
                "10,000 MNIST clients (6 examples each, one local step, MLP 784-200-200-10), "
                "every client in the round. Command: `.venv/bin/python benchmarks/"
                f"engine_overhead.py --scale --repeats {args.repeats}`\n\n"
                if args.scale
                else "Command: `.venv/bin/python benchmarks/"
                "engine_overhead.py` (best of 5 interleaved runs; Ray once)\n\n"
            )
            + table
            + "\n\n"
            + "\n".join(f"- {n}" for n in notes),
        )


if __name__ == "__main__":
    main()
