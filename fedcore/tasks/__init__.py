"""Task registry: a task is data + partitioner + model + local train/eval."""

from __future__ import annotations

from dataclasses import replace

from fedcore.config import ConfigError, RunConfig, check_model_updates
from fedcore.config.sections import load_task
from fedcore.tasks.algorithm import Algorithm, ExampleDp, RoundContext
from fedcore.tasks.base import (
    ClientData,
    ClientUpdate,
    FederatedData,
    ServerData,
    Task,
    TrainParams,
)


def get_task(name: str) -> Task | Algorithm:
    """The task registered under ``name`` (:data:`fedcore.config.sections.BUILTIN_TASKS`),
    or the :class:`Task` (or :class:`~fedcore.tasks.algorithm.Algorithm`) that
    ``"package.module:NAME"`` names in the user's own code (imported on first use; it must be
    importable in every process that runs a client or the server)."""
    task = load_task(name)
    if not isinstance(task, Task | Algorithm):
        module_name, _, attr = name.partition(":")
        raise ConfigError(
            f"task = {name!r}: {module_name}.{attr} is "
            f"{'missing' if task is None else type(task).__name__}, not a fedcore Task or Algorithm"
        )
    return task


def checked_task(cfg: RunConfig) -> Task | Algorithm:
    """The task of ``cfg``, once its own configuration rules (``check_config``; for a
    :class:`Task`, also Flower's strategies' rules on model updates) accept ``cfg``: the
    server side calls this before a run directory or a round exists."""
    task = get_task(cfg.task)
    if isinstance(task, Task):  # model updates, aggregated by Flower's strategies
        check_model_updates(cfg)
    if task.check_config is not None:
        task.check_config(cfg)
    return task


def server_data(task: Task | Algorithm, cfg: RunConfig) -> ServerData:
    """What the server of a ``cfg`` run holds: the task's ``load_server``, which loads no
    client's data; a task without that hook has it cut out of its ``load_data``."""
    if task.load_server is not None:
        return task.load_server(cfg)
    return ServerData.of(task.load_data(cfg))


def model_shape(task: Task | Algorithm, cfg: RunConfig) -> ServerData:
    """The model's shape alone (no test set): what building a model needs, on any node."""
    return server_data(task, replace(cfg, evaluate=replace(cfg.evaluate, server=False)))


__all__ = [
    "Algorithm",
    "ClientData",
    "ClientUpdate",
    "ExampleDp",
    "FederatedData",
    "RoundContext",
    "ServerData",
    "Task",
    "TrainParams",
    "checked_task",
    "get_task",
    "model_shape",
    "server_data",
]
