"""Turn a labelled dataset into per-client tensors following the configured partition."""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedcore import partition, seeding
from fedcore.config import ConfigError, DataConfig, RunConfig
from fedcore.datasets import DATASETS, Dataset, load_dataset, load_test_split
from fedcore.datasets.arrays import load_files
from fedcore.datasets.node import SHAPES
from fedcore.tasks.base import ClientData, FederatedData, ServerData


def check_config(cfg: RunConfig) -> None:
    """ConfigError unless ``cfg``'s data is labelled examples (not a graph, ratings, a
    Bayesian network's records or a regression)."""
    d = cfg.data
    if d.dataset not in (*DATASETS, "files") or d.partition == "louvain":
        raise ConfigError(
            f"task {cfg.task!r} reads labelled examples ({', '.join(DATASETS)} or files); "
            f"data.dataset = {d.dataset!r} and data.partition = {d.partition!r} are for "
            "another task (graphs: gcn, ratings: mf, networks: bayesnet, regression: linear)"
        )


def split_indices(cfg: DataConfig, ds: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
    """Client index sets over the training samples, by ``cfg.partition``.

    A split the data cannot support (more clients than samples, an unreachable minimum
    size) is a configuration error, reported with the keys involved.
    """
    try:
        return _split(cfg, ds, rng)
    except ValueError as err:
        raise ConfigError(
            f"data.partition = {cfg.partition!r} cannot split {ds.name} "
            f"({len(ds.y_train)} training samples) into data.num-clients = {cfg.num_clients}: "
            f"{err}"
        ) from None


def _split(cfg: DataConfig, ds: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
    n, k = len(ds.y_train), cfg.num_clients
    if cfg.partition == "iid":
        return partition.iid(n, k, rng)
    if cfg.partition == "dirichlet":
        return partition.dirichlet(ds.y_train, k, cfg.alpha, rng, min_size=cfg.min_size)
    if cfg.partition == "shards":
        return partition.shards(ds.y_train, k, cfg.shards_per_client, rng)
    if cfg.partition == "quantity":
        return partition.quantity_skew(n, k, cfg.alpha, rng, min_size=cfg.min_size)
    if ds.groups_train is None:
        raise ValueError(
            f"data.partition = 'natural' needs a dataset with natural clients (femnist, or "
            f"files with a client array or data.client-column); {ds.name!r} has none"
        )
    return partition.natural(ds.groups_train, k)


def federate(ds: Dataset, cfg: DataConfig, seed: int) -> FederatedData:
    """Partition ``ds`` and hold out ``cfg.local_test_fraction`` of each client for evaluation."""
    rng = seeding.numpy_rng(seed, seeding.PARTITION)
    parts = split_indices(cfg, ds, rng)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    clients = []
    for idx in parts:
        idx = rng.permutation(idx)
        n_test = round(len(idx) * cfg.local_test_fraction)
        if len(idx) - n_test < 1:
            n_test = len(idx) - 1
        tr, te = torch.from_numpy(np.sort(idx[n_test:])), torch.from_numpy(np.sort(idx[:n_test]))
        clients.append(ClientData(x[tr], y[tr], x[te], y[te]))
    report = partition.partition_report(parts, ds.y_train, ds.num_classes)
    report["dataset"] = ds.name
    report["partition"] = cfg.partition
    return FederatedData(
        clients=tuple(clients),
        x_test=torch.from_numpy(ds.x_test),
        y_test=torch.from_numpy(ds.y_test),
        num_features=ds.num_features,
        num_classes=ds.num_classes,
        report=report,
    )


# Loading and partitioning is the slow part of a client call; a process (a worker, a Ray
# actor, a SuperNode) keeps the last few results. Keys are frozen configs, values read-only.
@functools.lru_cache(maxsize=4)
def load_federated(cfg: DataConfig, seed: int) -> FederatedData:
    """The federated split of ``cfg.dataset`` for ``seed``, loaded once per process."""
    return federate(_load(cfg, seed), cfg, seed)


def _load(cfg: DataConfig, seed: int) -> Dataset:
    if cfg.dataset == "files":
        return load_files(
            cfg.train_file,
            cfg.test_file,
            label_column=cfg.label_column,
            client_column=cfg.client_column,
            test_fraction=cfg.test_fraction,
            rng=seeding.numpy_rng(seed, seeding.PARTITION, 1),  # the held-out test set
        )
    return load_dataset(cfg.dataset, cfg.data_dir or None, download=cfg.download)


def load_server_data(cfg: RunConfig) -> ServerData:
    """The server's data of a classification run: the model's shape, and the held-out test
    set only when the server evaluates; no training split is partitioned, and MNIST's
    training files are not even read."""
    d = cfg.data
    if not cfg.evaluate.server and d.dataset in SHAPES:
        return ServerData(*SHAPES[d.dataset])
    if d.dataset == "files":  # the user's files: the shape and the test set come from them
        ds = _load(d, cfg.seed)
        data = ServerData(
            ds.num_features,
            ds.num_classes,
            torch.from_numpy(ds.x_test),
            torch.from_numpy(ds.y_test),
        )
    else:
        x, y, classes = load_test_split(d.dataset, d.data_dir or None, download=d.download)
        data = ServerData(x.shape[1], classes, torch.from_numpy(x), torch.from_numpy(y))
    return data if cfg.evaluate.server else ServerData(data.num_features, data.num_classes)
