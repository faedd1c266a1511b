"""Task registry: a task is data + partitioner + model + local train/eval."""

from __future__ import annotations

from fedcore.tasks.base import ClientData, ClientUpdate, FederatedData, Task, TrainParams


def get_task(name: str) -> Task:
    """The task registered under ``name`` (imported on demand: nothing loads at import time)."""
    if name == "mlp":
        from fedcore.tasks.mlp import TASK

        return TASK
    raise ValueError(f"unknown task {name!r}; available: mlp")


__all__ = ["ClientData", "ClientUpdate", "FederatedData", "Task", "TrainParams", "get_task"]
