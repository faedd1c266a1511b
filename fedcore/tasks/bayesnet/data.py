"""Task ``bayesnet``'s data: records forward-sampled from a standard network, split over
the clients by ``data.partition`` (IID, quantity skew, or skewed by one variable's value:
Dirichlet or shards with that value as the label)."""

from __future__ import annotations

import functools

import numpy as np

from fedcore import partition, seeding
from fedcore.config import ConfigError, RunConfig
from fedcore.datasets.networks import Network, load_network, sample_records
from fedcore.tasks.base import ClientData, FederatedData, ServerData

RECORDS, TEST_RECORDS = 2, 3  # streams under seeding.PARTITION: clients' and server's records
PARTITIONS = ("iid", "dirichlet", "quantity", "shards")


def skew_variable(cfg: RunConfig, network: Network) -> int:
    """The variable whose value labels a record for the skewed partitions."""
    name = cfg.bayesnet.skew_variable or network.variables[0]
    try:
        return network.index(name)
    except KeyError as err:
        raise ConfigError(f"bayesnet.skew-variable: {err.args[0]}") from None


def split(cfg: RunConfig, labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Client index sets over the records, by ``data.partition``; ConfigError if the records
    cannot be split so."""
    d, n = cfg.data, len(labels)
    try:
        if d.partition == "iid":
            return partition.iid(n, d.num_clients, rng)
        if d.partition == "dirichlet":
            return partition.dirichlet(labels, d.num_clients, d.alpha, rng, min_size=d.min_size)
        if d.partition == "quantity":
            return partition.quantity_skew(n, d.num_clients, d.alpha, rng, min_size=d.min_size)
        if d.partition == "shards":
            return partition.shards(labels, d.num_clients, d.shards_per_client, rng)
    except ValueError as err:
        raise ConfigError(
            f"data.partition = {d.partition!r} cannot split bayesnet.records = "
            f"{cfg.bayesnet.records} into data.num-clients = {d.num_clients}: {err}"
        ) from None
    raise ConfigError(
        f"data.partition = {d.partition!r} is not for networks; use {', '.join(PARTITIONS)}"
    )


def _client(records: np.ndarray, label: int) -> ClientData:
    empty = np.zeros((0, records.shape[1]), np.int64)
    return ClientData(records, records[:, label], empty, empty[:, 0])


@functools.lru_cache(maxsize=4)
def _load(cfg: RunConfig) -> FederatedData:
    network = load_network(cfg.data.dataset)
    records = sample_records(network.name, cfg.bayesnet.records, cfg.seed, RECORDS)
    label = skew_variable(cfg, network)
    labels = records[:, label]
    parts = split(cfg, labels, seeding.numpy_rng(cfg.seed, seeding.PARTITION))
    report = partition.partition_report(parts, labels, int(network.cards[label]))
    report |= {"dataset": network.name, "partition": cfg.data.partition}
    report["skew-variable"] = network.variables[label]
    server = load_server(cfg)
    return FederatedData(
        clients=tuple(_client(records[idx], label) for idx in parts),
        x_test=server.x_test,
        y_test=server.y_test,
        num_features=server.num_features,
        num_classes=server.num_classes,
        report=report,
    )


def load_data(cfg: RunConfig) -> FederatedData:
    """Every client's records (``x_train``: ``(n, V)`` int64 state indices; ``y_train``: the
    skew variable's column; no local test split) and the server's test records."""
    return _load(cfg)


def load_server(cfg: RunConfig) -> ServerData:
    """The server's data: the network's size and, under ``evaluate.server``, its own
    ``bayesnet.test-records`` records (sampled on a stream of their own)."""
    network = load_network(cfg.data.dataset)
    shape = (len(network.variables), int(network.cards.max()))
    if not cfg.evaluate.server:
        return ServerData(*shape)
    test = sample_records(network.name, cfg.bayesnet.test_records, cfg.seed, TEST_RECORDS)
    return ServerData(*shape, test, np.zeros(len(test), np.int64))
