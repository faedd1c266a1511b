"""What a task is: federated data, a model, and the two client hooks (train, evaluate).

A task owns everything that depends on the kind of data and model. The engines, the Flower
apps and the strategies only see these types, so a graph or a recommender task plugs in
without touching them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fedcore.config import RunConfig
from fedcore.tasks.setup import Setup

if TYPE_CHECKING:  # annotations only: parsing a config imports this package, never torch
    import torch
    from torch import nn


@dataclass(frozen=True)
class ClientData:
    """One client's local data, preloaded as tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return len(self.y_train)


@dataclass(frozen=True)
class FederatedData:
    """All clients' data plus the server's held-out test set and the partition report."""

    clients: tuple[ClientData, ...]
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_features: int
    num_classes: int
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ServerData:
    """What the server holds of a task's data: the model's shape and, when it evaluates
    (``evaluate.server``), the held-out test set; never a client's data.

    A task's ``load_server`` hook builds it without loading or partitioning the clients'
    data; :func:`fedcore.tasks.server_data` falls back to cutting it out of ``load_data``.
    """

    num_features: int
    num_classes: int
    x_test: object | None = None
    y_test: object | None = None

    @classmethod
    def of(cls, data: FederatedData) -> ServerData:
        """The server's part of a task's federated data (a task without ``load_server``)."""
        return cls(data.num_features, data.num_classes, data.x_test, data.y_test)


class ModelShape(Protocol):
    """What ``build_model`` and ``init`` read: a :class:`ServerData` on the server, the
    :class:`FederatedData` in a simulated client's process."""

    num_features: int
    num_classes: int


@dataclass(frozen=True)
class TrainParams:
    """Per-round local training settings (from the run config and the server's message)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class ClientUpdate:
    """What local training produced: the new local weights, their weight, and metrics."""

    state: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity
class Task:
    """The hooks of one task; see :mod:`fedcore.tasks` for the registry."""

    name: str
    load_data: Callable[[RunConfig], FederatedData]
    build_model: Callable[[RunConfig, ModelShape, torch.Generator], nn.Module]
    train_one_client: Callable[[nn.Module, ClientData, TrainParams, torch.Generator], ClientUpdate]
    evaluate: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, float]]
    # sample-level DP-SGD; None where the task has no sound per-example mechanism
    train_one_client_dp: Callable | None = None
    # the task's own configuration rules: ConfigError naming the setting, or None
    check_config: Callable[[RunConfig], None] | None = None
    # whether a deployed node's own data file (fedcore.datasets.node: a classification
    # client's arrays) can hold a client's data for this task
    node_files: bool = False
    # a secure sum over every node before round 1 (fedcore.tasks.setup), or None
    setup: Setup | None = None
    # the server's data (ServerData: the model's shape, the held-out test set when
    # evaluate.server) without the clients'; None: cut out of load_data
    load_server: Callable[[RunConfig], ServerData] | None = None
    # the task's own configuration tables: name -> frozen dataclass of
    # fedcore.config.option fields, read as cfg.<name> (fedcore.config.sections)
    sections: Mapping[str, type] = field(default_factory=dict)
