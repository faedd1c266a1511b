"""What task ``gcn`` refuses: settings that are valid alone but not for a federated GCN."""

from __future__ import annotations

from fedcore.config import ConfigError, RunConfig
from fedcore.datasets.planetoid import NAMES as GRAPH_DATASETS
from fedcore.graph_partition import GRAPH_PARTITIONERS


def check_config(cfg: RunConfig) -> None:
    """ConfigError naming the setting unless ``cfg`` fits the GCN task."""
    if cfg.data.dataset not in GRAPH_DATASETS:
        raise ConfigError(
            f"task 'gcn' needs a graph dataset ({', '.join(GRAPH_DATASETS)}), "
            f"not data.dataset = {cfg.data.dataset!r}"
        )
    if cfg.data.partition not in GRAPH_PARTITIONERS:
        raise ConfigError(
            f"data.partition = {cfg.data.partition!r} does not split graphs; use one of "
            f"{', '.join(GRAPH_PARTITIONERS)}"
        )
    if cfg.graph.mode == "precomm" and cfg.data.num_clients < 3:
        raise ConfigError(  # FedGCN's pre-communication is a secure sum over every client
            f"graph.mode = 'precomm' sums the clients' neighbour aggregates securely, "
            f"which needs at least 3 clients (data.num-clients = {cfg.data.num_clients}): "
            f"with two, each reads the other's from the sum"
        )
    if len(cfg.model.hidden) != 1:
        raise ConfigError(
            f"task 'gcn' has one hidden layer; got model.hidden = {list(cfg.model.hidden)}"
        )
    if cfg.privacy.dp in ("sample", "sample-distributed"):
        raise ConfigError(
            f"privacy.dp = {cfg.privacy.dp!r} is refused for task 'gcn': DP-SGD assumes "
            "independent examples, but a node's features reach its neighbours' gradients "
            "through the graph, so per-node clipping bounds nothing; use client-level DP "
            "(privacy.dp = 'client')"
        )
    if cfg.graph.precomm_epsilon > 0 and cfg.graph.precomm_noise_multiplier > 0:
        raise ConfigError(
            f"graph.precomm-epsilon = {cfg.graph.precomm_epsilon} calibrates the "
            f"pre-communication noise; set graph.precomm-noise-multiplier = "
            f"{cfg.graph.precomm_noise_multiplier} only with graph.precomm-epsilon = 0"
        )
