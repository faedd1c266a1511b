"""Task registry: a task is data + partitioner + model + local train/eval."""

from __future__ import annotations

import importlib

from fedcore.tasks.base import ClientData, ClientUpdate, FederatedData, Task, TrainParams

# name -> module defining ``TASK``; imported on first use, so nothing loads at import time
_REGISTRY = {"mlp": "fedcore.tasks.mlp", "gcn": "fedcore.tasks.gcn", "mf": "fedcore.tasks.mf"}


def get_task(name: str) -> Task:
    """The task registered under ``name``."""
    try:
        module = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(_REGISTRY)}") from None
    return importlib.import_module(module).TASK


__all__ = ["ClientData", "ClientUpdate", "FederatedData", "Task", "TrainParams", "get_task"]
