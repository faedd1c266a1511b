"""DP-SGD epoch time against the non-private epoch, side by side in one run.

Workload (issue 3): a 784-256-10 MLP on MNIST's 60,000 training images, batch 128, one epoch
of SGD, one torch thread. Contestants: no DP; fedcore's one-pass per-example clipping
(``privacy.clipping``, what fedcore runs); Opacus with its default per-sample gradient hooks;
Opacus' ghost clipping. Each contestant runs ``--repeats`` times interleaved; the best time
counts (Opacus' hooks, 30x slower, run once). The DP contestants use fixed-size batches here
so all four do the same arithmetic (fedcore's training itself samples with Poisson).

    .venv/bin/python benchmarks/dp_speed.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.datasets import load_dataset
from privacy.clipping import ClippedGradients

BATCH, CLIP, NOISE, LR = 128, 1.0, 1.0, 0.1


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def _batches(x: torch.Tensor, y: torch.Tensor):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for begin in range(0, len(y), BATCH):
        idx = order[begin : begin + BATCH]
        yield x[idx], y[idx]


def no_dp(x, y) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for xb, yb in _batches(x, y):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()


def fedcore_dp(x, y) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    with ClippedGradients(model) as clipper:
        for xb, yb in _batches(x, y):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb, reduction="sum").backward()
            clipper.write_clipped_sum(CLIP)
            for p in model.parameters():
                p.grad.add_(torch.randn(p.shape, generator=gen), alpha=NOISE * CLIP)
                p.grad.div_(BATCH)
            opt.step()


def opacus_dp(x, y, mode: str) -> None:
    from opacus import PrivacyEngine

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True
    )
    engine = PrivacyEngine()
    criterion = nn.CrossEntropyLoss()
    out = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        criterion=criterion,
        noise_multiplier=NOISE,
        max_grad_norm=CLIP,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    model, opt = out[0], out[1]
    criterion = out[2] if mode == "ghost" else criterion
    for xb, yb in out[-1]:
        opt.zero_grad()
        criterion(model(xb), yb).backward()
        opt.step()


CONTESTANTS = {
    "no DP": no_dp,
    "fedcore one-pass clipping": fedcore_dp,
    "Opacus hooks": lambda x, y: opacus_dp(x, y, "hooks"),
    "Opacus ghost clipping": lambda x, y: opacus_dp(x, y, "ghost"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    ds = load_dataset("mnist")
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    best = {name: float("inf") for name in CONTESTANTS}
    for i in range(args.repeats):
        for name, run in CONTESTANTS.items():
            if name == "Opacus hooks" and i > 0:  # 30x slower than the rest: once is enough
                continue
            start = time.perf_counter()
            run(x, y)
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["no DP"]
    rows = [[name, f"{t:.2f}", f"{t / base:.2f}x"] for name, t in best.items()]
    for row in rows:
        print(" | ".join(row), flush=True)
    if not args.no_write:
        from results_md import markdown_table, update_section

        update_section(
            "dp-speed",
            "784-256-10 MLP, MNIST train set (60,000), batch 128, one "
            "epoch, 1 thread, best of 3 interleaved runs. Target: fedcore's DP-SGD "
            "epoch within 2x of the non-private epoch.\n\nCommand: `.venv/bin/python "
            "benchmarks/dp_speed.py`\n\n" + markdown_table(["epoch", "seconds", "vs no DP"], rows),
        )


if __name__ == "__main__":
    main()
