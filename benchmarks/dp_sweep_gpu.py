"""Hyperparameter sweep for sample-level DP-SGD on federated MNIST, on one GPU.

A standalone replica (torch + numpy only: no flwr, no opacus) of what
``fedcore simulate simulations/scenarios/mnist-dp.toml`` runs, for many configurations at once:

- 10 IID clients of 6,000 training examples each, all taking part in every round; FedAvg with
  equal weights; the server evaluates the averaged model on the 10,000 test images.
- Each client, each round, from the global model: a fresh SGD optimizer (momentum buffer reset),
  ``ceil(local_epochs / q)`` steps; every step samples each local example with probability
  ``q`` (Poisson), clips each example's full gradient (all layers) to ``clip``, adds
  N(0, (z * clip)^2) to the sum, divides by ``q * n`` and takes an SGD step (torch's momentum
  rule, no dampening, no weight decay). As in ``clients/dp_training.py``.
- The MLP: ``Linear -> activation`` blocks then a linear classifier, PyTorch's default
  uniform(+-1/sqrt(fan_in)) init for weights and biases.

The noise multipliers ``z`` are NOT computed here: calibrate them beforehand with
``privacy.accounting.calibrate_noise(eps, delta, q, rounds * ceil(local_epochs / q))``
and put them in the configs file. Per-example clipping uses the one-pass "ghost norm"
(``privacy/clipping.py``): ``||grad_i||^2 = sum_l ||g_il||^2 (||a_il||^2 + 1)``.

Configurations that share the architecture, preprocessing, q, rounds, local epochs and seed run
together as one batch of models (``configs x 10 clients``), so lr, momentum, clip and z vary
freely inside a batch at no extra cost. Results are written after every batch.

Configs file: a JSON list of objects with keys
``name, hidden (list), activation (relu|tanh), preprocess, q, rounds, local_epochs, lr,
momentum, clip, z, seed``; ``preprocess`` is ``none`` (pixels in [0, 1], fedcore's scaling),
``std`` ((x - 0.1307) / 0.3081), ``center`` (x - 0.1307), optionally followed by
``+projK`` (a data-independent Gaussian projection to K dimensions, entries N(0, 1/K)) or
``+rfK`` (K fixed random ReLU features, relu(x G / sqrt(d))). Optional keys (not fedcore
options, they would need code): ``schedule`` (``const`` or ``cos``: lr * (1 + cos(pi r / R)) / 2
in round r = 0..R-1); and every run also reports ``ema``: the accuracy of a server-side
exponential moving average (decay 0.5, 0.8, 0.9) of the global models over rounds.

    python3 benchmarks/dp_sweep_gpu.py --data .sweep --configs .sweep/configs.json --out OUT
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import struct
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

NUM_CLIENTS = 10
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
GROUP_KEYS = ("hidden", "activation", "preprocess", "q", "rounds", "local_epochs", "seed")


def read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(folder: Path):
    def split(images, labels):
        x = read_idx_gz(folder / images).reshape(-1, 784).astype(np.float32) / np.float32(255.0)
        return x, read_idx_gz(folder / labels).astype(np.int64)

    xtr, ytr = split("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    xte, yte = split("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return xtr, ytr, xte, yte


def preprocess(spec: str, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Apply a data-independent transform (public constants or a fixed random matrix)."""
    parts = spec.split("+")
    base = parts[0]
    if base == "std":
        x = (x - MNIST_MEAN) / MNIST_STD
    elif base == "center":
        x = x - MNIST_MEAN
    elif base != "none":
        raise ValueError(f"unknown preprocess {spec!r}")
    for extra in parts[1:]:
        if extra.startswith("proj"):
            k = int(extra[4:])
            g = torch.Generator(device="cpu").manual_seed(12345 + seed)
            r = torch.randn(x.shape[1], k, generator=g) / math.sqrt(k)
            x = x @ r.to(x.device)
        elif extra.startswith("rf"):  # fixed random ReLU features, N(0, 1/d) weights
            k = int(extra[2:])
            g = torch.Generator(device="cpu").manual_seed(54321 + seed)
            r = torch.randn(x.shape[1], k, generator=g) / math.sqrt(x.shape[1])
            x = torch.relu(x @ r.to(x.device))
        else:
            raise ValueError(f"unknown preprocess {spec!r}")
    return x.contiguous()


def init_params(widths, m, gen, device):
    """One set of initial weights, repeated for m models (all clients start from the same)."""
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(fan_out, fan_in, generator=gen, device=device) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen, device=device) * 2 - 1) * bound
        params.append([w.expand(m, -1, -1).clone(), b.expand(m, -1).clone()])
    return params


def forward(params, x, act):
    """x: (M, B, d). Returns layer inputs, pre-activations and logits."""
    inputs, pre = [], []
    a = x
    for i, (w, b) in enumerate(params):
        inputs.append(a)
        z = torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))
        pre.append(z)
        if i < len(params) - 1:
            a = torch.relu(z) if act == "relu" else torch.tanh(z)
    return inputs, pre, pre[-1]


def clipped_noisy_grads(params, x, y, valid, act, clip, std, denom, gen):
    """Sum of per-example clipped gradients + N(0, std^2), divided by denom; per model."""
    inputs, pre, logits = forward(params, x, act)
    g = torch.softmax(logits, dim=-1)
    g.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(y, dtype=g.dtype).unsqueeze(-1))
    g = g * valid.unsqueeze(-1)
    grads_out = [None] * len(params)
    sq = torch.zeros(valid.shape, device=x.device)
    for i in range(len(params) - 1, -1, -1):
        grads_out[i] = g
        a = inputs[i]
        sq += g.pow(2).sum(-1) * (a.pow(2).sum(-1) + 1.0)
        if i > 0:
            ga = torch.bmm(g, params[i][0])
            if act == "relu":
                g = ga * (pre[i - 1] > 0)
            else:
                t = inputs[i]  # tanh(pre[i-1])
                g = ga * (1 - t * t)
    factors = (clip[:, None] / (sq.sqrt() + 1e-12)).clamp(max=1.0) * valid
    out = []
    for i, (_w, _b) in enumerate(params):
        gc = grads_out[i] * factors.unsqueeze(-1)
        gw = torch.bmm(gc.transpose(1, 2), inputs[i])
        gb = gc.sum(1)
        gw += torch.randn(gw.shape, generator=gen, device=gw.device) * std[:, None, None]
        gb += torch.randn(gb.shape, generator=gen, device=gb.device) * std[:, None]
        out.append((gw / denom, gb / denom))
    return out


@torch.no_grad()
def evaluate(params, xte, yte, act, k):
    """Accuracy of each of the k averaged models (params hold k models) on the test set."""
    correct = torch.zeros(k, device=xte.device)
    for s in range(0, xte.shape[0], 5000):
        xb = xte[s : s + 5000].unsqueeze(0).expand(k, -1, -1)
        _, _, logits = forward(params, xb, act)
        correct += (logits.argmax(-1) == yte[s : s + 5000]).float().sum(1)
    return (correct / xte.shape[0]).tolist()


def run_group(cfgs, xtr_raw, ytr, xte_raw, yte, device):
    c0 = cfgs[0]
    seed = int(c0["seed"])
    k, m = len(cfgs), len(cfgs) * NUM_CLIENTS
    xtr = preprocess(c0["preprocess"], xtr_raw, 0)
    xte = preprocess(c0["preprocess"], xte_raw, 0)
    # IID partition: a seeded permutation split into 10 equal clients.
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(xtr.shape[0])).to(device)
    n = xtr.shape[0] // NUM_CLIENTS
    client_idx = perm[: n * NUM_CLIENTS].view(NUM_CLIENTS, n)  # (10, n) global indices
    model_client = torch.arange(m, device=device) % NUM_CLIENTS  # model = config * 10 + client
    base = client_idx[model_client]  # (M, n)

    gen = torch.Generator(device=device).manual_seed(seed)
    widths = (xtr.shape[1], *c0["hidden"], 10)
    params = init_params(widths, m, gen, device)
    act = c0["activation"]
    q = float(c0["q"])
    steps = max(1, math.ceil(int(c0["local_epochs"]) / q))
    rep = lambda key: torch.tensor(  # noqa: E731
        [float(c[key]) for c in cfgs for _ in range(NUM_CLIENTS)], device=device
    )
    lr, mom, clip, z = rep("lr"), rep("momentum"), rep("clip"), rep("z")
    std = z * clip
    denom = q * n
    accs = [[] for _ in cfgs]
    rounds = int(c0["rounds"])
    cos_sched = torch.tensor(
        [float(c.get("schedule", "const") == "cos") for c in cfgs for _ in range(NUM_CLIENTS)],
        device=device,
    )
    lr0 = lr
    ema_decays = (0.5, 0.8, 0.9)
    ema, ema_accs = None, {d: [[] for _ in cfgs] for d in ema_decays}
    for _r in range(rounds):
        factor = 0.5 * (1 + math.cos(math.pi * _r / rounds))
        lr = lr0 * (1 - cos_sched) + lr0 * cos_sched * factor
        bufs = None
        for _s in range(steps):
            mask = torch.rand(m, n, generator=gen, device=device) < q
            counts = mask.sum(1)
            bmax = max(1, int(counts.max()))
            order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)
            sel = order[:, :bmax]
            valid = (torch.arange(bmax, device=device)[None, :] < counts[:, None]).float()
            gidx = torch.gather(base, 1, sel)
            xb, yb = xtr[gidx], ytr[gidx]
            grads = clipped_noisy_grads(params, xb, yb, valid, act, clip, std, denom, gen)
            if bufs is None:
                bufs = [[gw.clone(), gb.clone()] for gw, gb in grads]
            else:
                for buf, (gw, gb) in zip(bufs, grads, strict=True):
                    buf[0].mul_(mom[:, None, None]).add_(gw)
                    buf[1].mul_(mom[:, None]).add_(gb)
            for p, buf in zip(params, bufs, strict=True):
                p[0].sub_(buf[0] * lr[:, None, None])
                p[1].sub_(buf[1] * lr[:, None])
        # FedAvg, equal weights; all clients restart from the average.
        avg = []
        for w, b in params:
            wa = w.view(k, NUM_CLIENTS, *w.shape[1:]).mean(1)
            ba = b.view(k, NUM_CLIENTS, *b.shape[1:]).mean(1)
            avg.append([wa, ba])
        for ci, acc in enumerate(evaluate(avg, xte, yte, act, k)):
            accs[ci].append(acc)
        if ema is None:
            ema = {d: [[w.clone(), b.clone()] for w, b in avg] for d in ema_decays}
        else:
            for d in ema_decays:
                for (ew, eb), (wa, ba) in zip(ema[d], avg, strict=True):
                    ew.mul_(d).add_(wa, alpha=1 - d)
                    eb.mul_(d).add_(ba, alpha=1 - d)
        for d in ema_decays:
            for ci, acc in enumerate(evaluate(ema[d], xte, yte, act, k)):
                ema_accs[d][ci].append(acc)
        params = [
            [wa.repeat_interleave(NUM_CLIENTS, 0), ba.repeat_interleave(NUM_CLIENTS, 0)]
            for wa, ba in avg
        ]
    emas = [{str(d): ema_accs[d][ci] for d in ema_decays} for ci in range(k)]
    return accs, steps, emas


def run_all(cfgs, data, device, args, start, deadline, results, skipped, out):
    """Run cfgs grouped into GPU batches, appending to results; skip past the deadline."""
    groups: dict[tuple, list] = defaultdict(list)
    for c in cfgs:
        groups[tuple(json.dumps(c[key]) for key in GROUP_KEYS)].append(c)
    print(f"{len(cfgs)} configs in {len(groups)} groups on {device}", flush=True)
    for gcfgs in groups.values():
        for s in range(0, len(gcfgs), args.max_batch):
            chunk = gcfgs[s : s + args.max_batch]
            if time.time() - start > deadline:
                skipped.extend(c["name"] for c in chunk)
                continue
            t0 = time.time()
            accs, steps, emas = run_group(chunk, *data, device)
            secs = time.time() - t0
            for c, acc, em in zip(chunk, accs, emas, strict=True):
                ema_final = {d: a[-1] for d, a in em.items()}
                results.append(
                    {
                        "config": c,
                        "steps_per_round": steps,
                        "accuracy": acc,
                        "final": acc[-1],
                        "best": max(acc),
                        "ema": em,
                        "ema_final": ema_final,
                        "group_seconds": secs,
                    }
                )
                print(
                    f"{acc[-1]:.4f} (max {max(acc):.4f}, ema.9 {ema_final['0.9']:.4f})  "
                    f"{c['name']}",
                    flush=True,
                )
            print(
                f"  [{len(chunk)} configs, {secs:.1f}s, total {time.time() - start:.0f}s]",
                flush=True,
            )
            write(out, results, skipped, device, start)


def write(out, results, skipped, device, start):
    payload = {
        "results": results,
        "skipped": skipped,
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "seconds": time.time() - start,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the 4 IDX .gz")
    parser.add_argument("--configs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--budget",
        type=float,
        default=1e9,
        help="seconds after which no new batch starts (replicas included)",
    )
    parser.add_argument(
        "--main-budget",
        type=float,
        default=1e9,
        help="seconds after which the main sweep stops starting batches",
    )
    parser.add_argument(
        "--replicate",
        type=int,
        default=0,
        help="rerun the best N configs (final accuracy) with other seeds",
    )
    parser.add_argument("--replicate-seeds", default="1,2")
    parser.add_argument("--max-batch", type=int, default=30, help="configs per GPU batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N configs")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # keep fp32 like the CPU reference
    start = time.time()
    device = torch.device(args.device)
    data = tuple(torch.from_numpy(a).to(device) for a in load_mnist(args.data))
    cfgs = json.loads(args.configs.read_text())
    if args.limit:
        cfgs = cfgs[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    run_all(
        cfgs,
        data,
        device,
        args,
        start,
        min(args.budget, args.main_budget),
        results,
        skipped,
        args.out,
    )
    if args.replicate:
        top = sorted(results, key=lambda r: -r["final"])[: args.replicate]
        reps = []
        for seed in (int(s) for s in args.replicate_seeds.split(",")):
            for r in top:
                c = dict(r["config"], seed=seed, name=f"{r['config']['name']}@s{seed}")
                reps.append(c)
        print(f"\nreplicating the best {len(top)} with seeds {args.replicate_seeds}", flush=True)
        run_all(reps, data, device, args, start, args.budget, results, skipped, args.out)
    write(args.out, results, skipped, device, start)
    print("\nbest by final accuracy:")
    for r in sorted(results, key=lambda r: -r["final"])[:40]:
        c = r["config"]
        print(f"{r['final']:.4f}  max {r['best']:.4f}  {c['name']}  z={c['z']:.3f}")
    if skipped:
        print(f"skipped (budget): {len(skipped)}")


if __name__ == "__main__":
    main()
