"""Task registry: a task is a :class:`Task` (data, model, local training and evaluation) or
an :class:`Algorithm` on typed statistics; every run executes an algorithm (a Task's is FedAvg
on it)."""

from __future__ import annotations

import functools
from dataclasses import replace

from fedcore.config import ConfigError, RunConfig
from fedcore.config.sections import load_task
from fedcore.tasks.algorithm import Algorithm, ExampleDp, RoundContext, check_algorithm_config
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
    importable in every process that runs a client or the server). This is the object as
    written; what a run executes is :func:`get_algorithm`'s."""
    task = load_task(name)
    if not isinstance(task, Task | Algorithm):
        module_name, _, attr = name.partition(":")
        raise ConfigError(
            f"task = {name!r}: {module_name}.{attr} is "
            f"{'missing' if task is None else type(task).__name__}, not a fedcore Task or Algorithm"
        )
    return task


def get_algorithm(name: str) -> Algorithm:
    """What a run of task ``name`` executes: its :class:`Algorithm`, or for a :class:`Task`
    (a model, its data and its local training) FedAvg and the server optimizers on it
    (:func:`fedcore.tasks.fedavg.fedavg`)."""
    task = get_task(name)
    return _fedavg(task) if isinstance(task, Task) else task


@functools.cache  # one algorithm per Task object, so its model cache is shared
def _fedavg(task: Task) -> Algorithm:
    from fedcore.tasks.fedavg import fedavg  # imports the built-in tasks: on first use only

    return fedavg(task, task.name)


def checked_task(cfg: RunConfig) -> Algorithm:
    """The algorithm of ``cfg``, once its rules accept ``cfg`` (the strategies its server
    hook implements, its mechanisms, and its own ``check_config``): the server side calls
    this before a run directory or a round exists."""
    algorithm = get_algorithm(cfg.task)
    if algorithm.check_config is not None:  # the task's own words first
        algorithm.check_config(cfg)
    check_algorithm_config(algorithm, cfg)
    return algorithm


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
    "get_algorithm",
    "get_task",
    "model_shape",
    "server_data",
]
