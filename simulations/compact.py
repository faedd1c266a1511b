"""Compact exports of a finished run's model for inference, measured against the float model.

Two variants of ``model.pt``, both made by PyTorch's own tools (no kernels of ours):

- ``int8``: post-training dynamic quantization (``torch.ao.quantization.quantize_dynamic``)
  of every ``nn.Linear``: weights stored as int8 (per-tensor affine), activations quantized
  on the fly per batch. What it covers is the Linear layers only: the MLP's every layer; the
  GCN's two weight matrices (``lin1``, ``lin2``), while its separate biases and the sparse
  propagation by the normalised adjacency stay float. PyTorch's quantized Linear takes dense
  inputs only, so the GCN's sparse bag-of-words features are fed to it dense (the float
  model multiplies them sparse).
- ``pruned``: global magnitude pruning (``torch.nn.utils.prune.global_unstructured`` with
  ``L1Unstructured``) of the Linear weights to the requested sparsity, made permanent
  (``prune.remove``). It is stored with each pruned weight as a bitmask of its nonzeros
  (``numpy.packbits``) and their float32 values (:func:`pack_pruned`), so its file shrinks
  with the sparsity; it runs on the dense kernels, so it is not faster.

Each variant is measured on the task's server-side test set (:func:`fedcore.tasks.server_data`,
the run's server evaluation): the size of its file as saved (``torch.save``; the float
model's is the run's own ``model.pt``), accuracy and loss from the task's ``evaluate``, and
single-thread latency: the median of ``repeats`` forward passes over the whole test set after
warm-up, timed with ``time.perf_counter`` under ``torch.set_num_threads(1)``, the variants
interleaved.

Writes ``compact/model-int8.pt``, ``compact/model-pruned.pt`` and ``compact/compact.json`` in
the run directory; :func:`load_compact` reads the exports back.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import pickle
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic
from torch.nn.utils import prune as torch_prune

from fedcore.config import ConfigError, RunConfig, load_scenario
from fedcore.keys import ACCURACY, LOSS
from fedcore.tasks import Task, get_task, server_data
from fedcore.tasks.base import ServerData
from fedcore.tasks.gcn import GraphView

FOLDER = "compact"
INT8_FILE = "model-int8.pt"
PRUNED_FILE = "model-pruned.pt"
REPORT_FILE = "compact.json"
VARIANTS = ("float", "int8", "pruned")
WARMUP = 3  # untimed forward passes before the timed ones (allocations, packed weights)


class CompactError(ConfigError):
    """A run directory whose model cannot be compacted: the message says why."""


@dataclasses.dataclass(frozen=True)
class RunModel:
    """A finished run's float model, its task and the server's test set."""

    path: Path
    cfg: RunConfig
    task: Task
    model: nn.Module
    data: ServerData


def load_run_model(run_dir: Path) -> RunModel:
    """The model of ``run_dir`` (its ``config.toml`` and ``model.pt``), built by its task and
    loaded, with the server's held-out test set; CompactError naming what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise CompactError(f"{run_dir} is not a run directory (no config.toml)")
    cfg = load_scenario(run_dir / "config.toml")
    task = get_task(cfg.task)
    if not isinstance(task, Task):
        raise CompactError(
            f"task {cfg.task!r} has no torch model to compact (it is an algorithm on "
            "statistics); compact works on a model task such as mlp or gcn"
        )
    if not (run_dir / "model.pt").is_file():
        raise CompactError(
            f"{run_dir} has no model.pt: the run has not completed (see its summary.json)"
        )
    # the test set is the server's, whether or not the run evaluated on it
    cfg_eval = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, server=True))
    data = server_data(task, cfg_eval)
    model = task.build_model(cfg, data, torch.Generator().manual_seed(0))
    try:
        model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        raise CompactError(
            f"{run_dir}/model.pt is not a state dict of task {cfg.task!r}'s model: {err}"
        ) from None
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise CompactError(f"task {cfg.task!r}: its model has no nn.Linear layer to compact")
    return RunModel(run_dir, cfg, task, model.eval(), data)


@contextlib.contextmanager
def _quantization_warnings_off() -> Iterator[None]:
    """torch.ao.quantization and its quantized tensors are deprecated in favour of torchao,
    which fedcore does not depend on; the eager API still ships with torch and works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", ".*quantized tensor creation", UserWarning)
        warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
        yield


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to int8."""
    with _quantization_warnings_off():
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def prune_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """A copy of ``model`` whose Linear weights, taken together, have their smallest
    ``amount`` fraction (by magnitude) set to zero, permanently."""
    _check_prune(amount)
    pruned = copy.deepcopy(model)
    weights = [(m, "weight") for m in pruned.modules() if isinstance(m, nn.Linear)]
    torch_prune.global_unstructured(weights, torch_prune.L1Unstructured, amount=amount)
    for module, name in weights:
        torch_prune.remove(module, name)
    return pruned


def _check_prune(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise CompactError(f"prune = {amount}: the sparsity must be at least 0 and below 1")


def linear_sparsity(model: nn.Module) -> float:
    """The fraction of zeros among the weights of ``model``'s float Linear layers."""
    weights = [m.weight for m in model.modules() if type(m) is nn.Linear]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def pack_pruned(state: dict[str, torch.Tensor], keys: set[str]) -> dict[str, Any]:
    """``state`` with each tensor of ``keys`` stored as the bitmask of its nonzeros and their
    values (1 bit per entry plus 4 bytes per nonzero), the others as they are."""
    packed: dict[str, Any] = {}
    for key, tensor in state.items():
        if key not in keys:
            packed[key] = tensor
            continue
        mask = (tensor != 0).numpy().ravel()
        packed[key] = {
            "shape": tuple(tensor.shape),
            "mask": torch.from_numpy(np.packbits(mask)),
            "values": tensor.reshape(-1)[torch.from_numpy(mask)].clone(),
        }
    return packed


def unpack_pruned(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict :func:`pack_pruned` packed."""
    state = {}
    for key, entry in packed.items():
        if not isinstance(entry, dict):
            state[key] = entry
            continue
        size = int(np.prod(entry["shape"]))
        mask = torch.from_numpy(np.unpackbits(entry["mask"].numpy(), count=size).astype(bool))
        dense = torch.zeros(size, dtype=entry["values"].dtype)
        dense[mask] = entry["values"]
        state[key] = dense.reshape(entry["shape"])
    return state


def latency_ms(forwards: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each forward pass over ``repeats`` timed calls, after
    :data:`WARMUP` untimed ones, on one thread (the thread count is restored after). The
    calls are interleaved (one of each per repeat), so a machine busy for a while slows all
    of them alike rather than the one timed then."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in forwards}
    try:
        with torch.inference_mode():
            for forward in forwards.values():
                for _ in range(WARMUP):
                    forward()
            for _ in range(repeats):
                for name, forward in forwards.items():
                    start = time.perf_counter()
                    forward()
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def dense_inputs(x: object) -> object:
    """The test inputs for a dynamically quantized model: PyTorch's quantized Linear takes
    dense inputs only, so a graph view's sparse features go dense."""
    if isinstance(x, GraphView) and x.x.is_sparse:
        return dataclasses.replace(x, x=x.x.to_dense())
    return x


def _measure(run: RunModel, model: nn.Module, x: object, file: Path) -> dict:
    """One variant's file size, test accuracy and loss."""
    with torch.inference_mode():
        metrics = run.task.evaluate(model, x, run.data.y_test)
    return {
        "file": str(file.relative_to(run.path)),
        "size_bytes": file.stat().st_size,
        "accuracy": metrics[ACCURACY],
        "loss": metrics[LOSS],
    }


def compact(run_dir: Path, prune: float = 0.5, repeats: int = 20) -> dict[str, Any]:
    """Export ``run_dir``'s model as int8 and as pruned to ``prune`` sparsity, measure the
    float model and both (size, accuracy, loss, single-thread latency) and write the files
    and ``compact/compact.json``; returns what the JSON holds."""
    _check_prune(prune)
    if repeats < 1:
        raise CompactError(f"repeats = {repeats}: time at least one forward pass")
    run = load_run_model(Path(run_dir))
    float_model = run.model
    int8_model = quantize_int8(float_model).eval()
    pruned_model = prune_magnitude(float_model, prune).eval()
    folder = run.path / FOLDER
    folder.mkdir(exist_ok=True)
    torch.save(int8_model.state_dict(), folder / INT8_FILE)
    linear_keys = {
        f"{name}.weight" for name, m in pruned_model.named_modules() if isinstance(m, nn.Linear)
    }
    torch.save(pack_pruned(pruned_model.state_dict(), linear_keys), folder / PRUNED_FILE)

    x, y = run.data.x_test, run.data.y_test
    models = {
        "float": (float_model, x, run.path / "model.pt"),
        "int8": (int8_model, dense_inputs(x), folder / INT8_FILE),
        "pruned": (pruned_model, x, folder / PRUNED_FILE),
    }
    variants = {name: _measure(run, m, inputs, file) for name, (m, inputs, file) in models.items()}
    forwards = {name: functools.partial(m, inputs) for name, (m, inputs, _) in models.items()}
    for name, ms in latency_ms(forwards, repeats).items():
        variants[name]["latency_ms"] = ms
    for entry in variants.values():
        entry["size_ratio"] = entry["size_bytes"] / variants["float"]["size_bytes"]
        entry["latency_ratio"] = entry["latency_ms"] / variants["float"]["latency_ms"]
    variants["int8"]["quantized"] = sorted(
        name for name, m in float_model.named_modules() if isinstance(m, nn.Linear)
    )
    variants["pruned"]["sparsity"] = linear_sparsity(pruned_model)
    result = {
        "task": run.cfg.task,
        "dataset": run.cfg.data.dataset,
        "prune": prune,
        "repeats": repeats,
        "threads": 1,
        "test_examples": len(y),
        "variants": variants,
    }
    (folder / REPORT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_compact(run_dir: Path, variant: str) -> nn.Module:
    """The ``int8`` or ``pruned`` export of ``run_dir`` as a model ready for inference (the
    int8 model takes a graph's features dense: :func:`dense_inputs`)."""
    if variant not in ("int8", "pruned"):
        raise CompactError(f"variant {variant!r}: one of 'int8', 'pruned'")
    run = load_run_model(Path(run_dir))
    path = Path(run_dir) / FOLDER / (INT8_FILE if variant == "int8" else PRUNED_FILE)
    if not path.is_file():
        raise CompactError(f"{path} does not exist: run fedcore compact {run_dir} first")
    if variant == "int8":
        model = quantize_int8(run.model)
        with _quantization_warnings_off():
            model.load_state_dict(torch.load(path, weights_only=True))
    else:
        model = run.model
        model.load_state_dict(unpack_pruned(torch.load(path, weights_only=True)))
    return model.eval()
