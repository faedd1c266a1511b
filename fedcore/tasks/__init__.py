"""Task registry: a task is data + partitioner + model + local train/eval."""

from __future__ import annotations

import functools
import importlib

from fedcore.config import ConfigError
from fedcore.tasks.algorithm import Algorithm, RoundContext
from fedcore.tasks.base import ClientData, ClientUpdate, FederatedData, Task, TrainParams

# name -> module defining ``TASK``; imported on first use, so nothing loads at import time
_REGISTRY = {
    "mlp": "fedcore.tasks.mlp",
    "gcn": "fedcore.tasks.gcn",
    "mf": "fedcore.tasks.mf",
    "fedsgd": "fedcore.tasks.fedsgd",
}


@functools.lru_cache(maxsize=32)  # called per message: the import machinery once per name
def get_task(name: str) -> Task | Algorithm:
    """The task registered under ``name``, or the :class:`Task` (or
    :class:`~fedcore.tasks.algorithm.Algorithm`) that ``"package.module:NAME"`` names in the
    user's own code (imported on first use; it must be importable in every process that runs
    a client or the server)."""
    if ":" not in name:
        try:
            return importlib.import_module(_REGISTRY[name]).TASK
        except KeyError:
            raise ValueError(
                f"unknown task {name!r}; available: {', '.join(_REGISTRY)}, or "
                "'package.module:NAME' for a Task of your own"
            ) from None
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"task = {name!r}: cannot import {module_name!r} ({err}); is it on the Python "
            "path of every process (PYTHONPATH, or an installed package)?"
        ) from None
    task = getattr(module, attr, None)
    if not isinstance(task, Task | Algorithm):
        raise ConfigError(
            f"task = {name!r}: {module_name}.{attr} is "
            f"{'missing' if task is None else type(task).__name__}, not a fedcore Task or Algorithm"
        )
    return task


__all__ = [
    "Algorithm",
    "ClientData",
    "ClientUpdate",
    "FederatedData",
    "RoundContext",
    "Task",
    "TrainParams",
    "get_task",
]
