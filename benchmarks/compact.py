"""Compact models for inference: float vs dynamic int8 vs magnitude-pruned, for the MLP and
the GCN (size on disk, test accuracy, single-thread latency over the whole test set).

Trains, unless given run directories: McMahan et al.'s 2NN (784-200-200-10) on MNIST, scenario
``mnist-iid`` (100 IID clients, C = 0.1, E = 1, B = 10, lr 0.1 as ``fedavg_mnist.py``) until
97% test accuracy (at most ``--mlp-rounds``); the GCN on Cora, scenario ``cora-gcn`` (10
Louvain clients, FedGCN pre-communication at epsilon 8) for ``--gcn-rounds`` rounds. Then
:func:`simulations.compact.compact` on each run (see its module docstring for what is
quantized and how size and latency are measured) and prints the table; ``--write`` writes it
to ``benchmarks/results/compact.md``.

    FEDCORE_DATA=../shared/data .venv/bin/python benchmarks/compact.py --write
    .venv/bin/python benchmarks/compact.py --mlp-run runs/<mlp> --gcn-run runs/<gcn>
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from results_md import markdown_table  # benchmarks/ is the script's folder

from fedcore.cli import scenario_path
from fedcore.config import load_scenario
from simulations.compact import compact, dense_inputs, latency_ms, load_run_model
from simulations.runner import simulate

RESULT = Path(__file__).with_name("results") / "compact.md"
COMMAND = "FEDCORE_DATA=../shared/data .venv/bin/python benchmarks/compact.py --write"
EXPLAINED = """\
What each variant is (`simulations/compact.py`): int8 is
`torch.ao.quantization.quantize_dynamic` on every `nn.Linear` (int8 weights, per-tensor affine;
activations quantized per batch at run time): all three layers of the MLP; the GCN's two weight
matrices, while its biases and its sparse propagation by the normalised adjacency stay float32.
PyTorch's quantized Linear takes dense inputs only, so the int8 GCN is fed Cora's bag-of-words
features dense, where the float GCN multiplies them sparse: the row "float, dense input" times
the float GCN on the same dense input (its ratio against the float GCN on sparse input, timed
interleaved with it). Pruned is `torch.nn.utils.prune.global_unstructured` (L1, all Linear
weights together) made permanent, stored as a bitmask of each weight's nonzeros plus their
float32 values; it runs on the dense kernels. Size is the file as saved (`torch.save`): the
run's `model.pt`, the int8 model's state dict, the packed pruned state dict. Accuracy is the
server's test set (MNIST's 10,000 test images; Cora's 1,000 test nodes, predicted from the whole
graph), as the run's server evaluation. Latencies were measured on a machine shared with other
jobs (2 cores), the variants interleaved (one pass of each per repeat): read the ratios, not the
milliseconds."""


def train(scenario: str, overrides: dict, out: Path) -> tuple[Path, float]:
    """A finished run of ``scenario`` in ``out`` and its wall seconds."""
    start = time.perf_counter()
    result = simulate(load_scenario(scenario_path(scenario), overrides), out=out, progress=False)
    return result.path, time.perf_counter() - start


def rows(model: str, result: dict) -> list[list[object]]:
    out = []
    for name, v in result["variants"].items():
        detail = {
            "float": "float32, as trained",
            "int8": "int8 Linear layers: " + ", ".join(v.get("quantized", [])),
            "pruned": f"{v.get('sparsity', 0):.0%} of Linear weights zero",
        }[name]
        out.append(
            [
                model,
                name,
                f"{v['size_bytes'] / 1024:.1f}",
                f"{v['size_ratio']:.2f}",
                f"{v['accuracy']:.4f}",
                f"{v['latency_ms']:.3f}",
                f"{v['latency_ratio']:.2f}",
                detail,
            ]
        )
    return out


def dense_float_row(model: str, path: Path, repeats: int) -> list[object]:
    """The float GCN fed its features dense, as the int8 one is, timed against itself on the
    sparse features: which part of int8's latency is the dense input's."""
    run = load_run_model(path)
    x = run.data.x_test
    dense = dense_inputs(x)
    ms = latency_ms({"sparse": lambda: run.model(x), "dense": lambda: run.model(dense)}, repeats)
    ratio = ms["dense"] / ms["sparse"]
    return [model, "float, dense input", "", "", "", f"{ms['dense']:.3f}", f"{ratio:.2f}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp-run", type=Path, help="a finished MLP run (default: train one)")
    parser.add_argument("--gcn-run", type=Path, help="a finished GCN run (default: train one)")
    parser.add_argument("--mlp-rounds", type=int, default=100)
    parser.add_argument("--gcn-rounds", type=int, default=60)
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--write", action="store_true", help=f"write {RESULT}")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fedcore-compact-"))
    seconds = {}
    mlp, gcn = args.mlp_run, args.gcn_run
    if mlp is None:
        mlp_overrides = {
            "train.lr": 0.1,
            "train.momentum": 0.0,
            "train.rounds": args.mlp_rounds,
            "train.target-accuracy": 0.97,
        }
        mlp, seconds["mlp"] = train("mnist-iid", mlp_overrides, work / "mlp")
    if gcn is None:
        gcn, seconds["gcn"] = train("cora-gcn", {"train.rounds": args.gcn_rounds}, work / "gcn")
    results = {
        name: compact(path, prune=args.prune, repeats=args.repeats)
        for name, path in (("MLP 2NN, MNIST", mlp), ("GCN, Cora", gcn))
    }
    header = [
        "model",
        "variant",
        "size KB",
        "size x float",
        "accuracy",
        "latency ms",
        "latency x float",
        "what",
    ]
    table_rows = [r for name, res in results.items() for r in rows(name, res)]
    table_rows.append(dense_float_row("GCN, Cora", gcn, args.repeats))
    table = markdown_table(header, table_rows)
    trained = ", ".join(f"{k} trained in {s:.0f} s" for k, s in seconds.items())
    note = (
        f"Latency: median of {args.repeats} forward passes over the whole test set "
        f"({', '.join(str(r['test_examples']) for r in results.values())} examples), one "
        f"thread, after warm-up; torch {torch.__version__}, quantized engine "
        f"{torch.backends.quantized.engine}. Run directories: {mlp}, {gcn}"
        + (f" ({trained})." if trained else ".")
        + "\n\n"
        + EXPLAINED
    )
    print(table)
    print(note)
    if args.write:
        RESULT.write_text(
            f"## Compact models for inference\n\n_Measured {date.today().isoformat()}._\n\n"
            f"Command: `{COMMAND}`\n\n{table}\n\n{note}\n"
        )


if __name__ == "__main__":
    main()
