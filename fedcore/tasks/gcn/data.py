"""The clients' graph data for a run: partition, pre-communication, views; once per process."""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from fedcore import seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets import resolve_data_dir
from fedcore.datasets.planetoid import load_planetoid
from fedcore.graph_partition import graph_report, split_nodes
from fedcore.tasks.base import FederatedData
from fedcore.tasks.gcn.precomm import (
    precomm_event,
    precomm_noise_multiplier,
    precomm_report,
    precommunicate,
    share_stddev,
)
from fedcore.tasks.gcn.views import full_view, local_client, precomm_client


@functools.lru_cache(maxsize=4)
def load_graph_data(cfg: RunConfig) -> FederatedData:
    """The clients' graph views for ``cfg`` (pre-communication included), once per process."""
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
    if cfg.graph.mode == "local":
        clients = tuple(local_client(graph, nodes) for nodes in parts)
    else:
        ax, degree = precommunicate(
            graph,
            parts,
            cfg.seed,
            clip=cfg.graph.feature_clip,
            noise_multiplier=precomm_noise_multiplier(cfg),
            seeded_noise=cfg.privacy.seeded_noise,
            features=cfg.graph.precomm_features,
        )
        clip = cfg.graph.feature_clip
        m = len(parts)  # the release's noise: the sum of m shares
        std = share_stddev(precomm_noise_multiplier(cfg), clip, m) * math.sqrt(m)
        if not cfg.graph.precomm_features:
            std = math.inf  # no feature rows: every client keeps its prior
        clients = tuple(
            precomm_client(graph, nodes, ax, degree, cfg.graph.hops, clip, std) for nodes in parts
        )
    if cfg.graph.optimizer != "sgd":
        clients = tuple(dataclasses.replace(c, optimizer=cfg.graph.optimizer) for c in clients)
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
        privacy_events=tuple(e for e in [precomm_event(cfg)] if e is not None)
        if cfg.graph.mode == "precomm"
        else (),
    )
