"""The clients' graph data for a run: partition, each client's part, views; once per process.

Under ``graph.mode = "precomm"`` a client's data is its :class:`GraphPart` until it has kept
the pre-communication's release (:mod:`fedcore.tasks.gcn.setup`)."""

from __future__ import annotations

import dataclasses
import functools

import torch

from fedcore import seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid
from fedcore.graph_partition import graph_report, split_nodes
from fedcore.tasks.base import FederatedData, ServerData
from fedcore.tasks.gcn.precomm import precomm_report
from fedcore.tasks.gcn.views import full_view, graph_part, local_client


@functools.lru_cache(maxsize=4)
def load_graph_data(cfg: RunConfig) -> FederatedData:
    """The clients' graph data for ``cfg`` (views, or under pre-communication their parts),
    the server's view of the whole graph and the partition report, once per process."""
    d = cfg.data
    graph = load_planetoid(d.dataset, resolve_data_dir(d.data_dir or None), download=d.download)
    rng = seeding.numpy_rng(cfg.seed, seeding.PARTITION)
    try:
        parts = split_nodes(
            d.partition, graph.y, graph.edges, d.num_clients, d.alpha, rng, d.min_size
        )
    except ValueError as err:
        raise ConfigError(
            f"data.partition = {d.partition!r} cannot split {graph.name} into "
            f"data.num-clients = {d.num_clients}: {err}"
        ) from None
    owned = tuple(graph_part(graph, nodes) for nodes in parts)
    if cfg.graph.mode == "local":
        clients = tuple(local_client(part) for part in owned)
        if cfg.graph.optimizer != "sgd":
            clients = tuple(dataclasses.replace(c, optimizer=cfg.graph.optimizer) for c in clients)
    else:  # each client's part; it trains once it kept the release (fedcore.tasks.gcn.setup)
        clients = owned
    report = graph_report(parts, graph.y, graph.edges, graph.num_classes)
    report |= {"dataset": graph.name, "partition": d.partition, "mode": cfg.graph.mode}
    if cfg.graph.mode == "precomm":
        report["precomm"] = precomm_report(cfg)
    return FederatedData(
        clients=clients,
        x_test=full_view(graph),
        y_test=torch.from_numpy(graph.y[graph.test]),
        num_features=graph.x.shape[1],
        num_classes=graph.num_classes,
        report=report,
    )


def load_graph_server(cfg: RunConfig) -> ServerData:
    """The server's data: the model's shape and, when it evaluates, the whole graph's view
    (the graph and its test labels are the server's held-out set); nodes are not split and
    no client's part or pre-communication view is built."""
    d = cfg.data
    graph = load_planetoid(d.dataset, resolve_data_dir(d.data_dir or None), download=d.download)
    if not cfg.evaluate.server:
        return ServerData(graph.x.shape[1], graph.num_classes)
    return ServerData(
        graph.x.shape[1],
        graph.num_classes,
        full_view(graph),
        torch.from_numpy(graph.y[graph.test]),
    )
