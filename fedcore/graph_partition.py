"""Splitting one graph's nodes among clients (subgraph federated learning), with a report.

Each client owns a set of nodes and knows the edges incident to them; an edge whose ends have
different owners is a *cut edge*, the information plain FedAvg on local subgraphs loses.

- ``louvain``: Louvain communities (networkx, seeded), packed largest first onto the client
  with the fewest nodes: clients are dense communities with few cut edges.
- ``dirichlet``: label skew over nodes, each class split by Dirichlet(alpha) proportions
  (FedGCN's and FedGraph's "beta"; large alpha is close to IID).
- ``iid``: nodes assigned uniformly at random.
"""

from __future__ import annotations

import numpy as np

from fedcore import partition

GRAPH_PARTITIONERS = ("louvain", "dirichlet", "iid")


def louvain(
    edges: np.ndarray, num_nodes: int, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Louvain communities packed onto ``num_clients`` clients, largest community first."""
    import networkx as nx  # here: the config schema imports this module, most runs need no graph

    graph = nx.Graph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edges.T.tolist())
    communities = nx.community.louvain_communities(graph, seed=int(rng.integers(2**31)))
    if len(communities) < num_clients:
        raise ValueError(f"{len(communities)} communities cannot fill {num_clients} clients")
    owned: list[list[int]] = [[] for _ in range(num_clients)]
    for community in sorted(communities, key=lambda c: (-len(c), min(c))):
        smallest = min(range(num_clients), key=lambda i: len(owned[i]))
        owned[smallest].extend(community)
    return [np.sort(np.asarray(nodes, np.int64)) for nodes in owned]


def split_nodes(
    method: str,
    labels: np.ndarray,
    edges: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Each client's node ids under ``method``; every node belongs to exactly one client."""
    if method == "louvain":
        return louvain(edges, len(labels), num_clients, rng)
    if method == "dirichlet":
        return partition.dirichlet(labels, num_clients, alpha, rng, min_size=min_size)
    if method == "iid":
        return partition.iid(len(labels), num_clients, rng)
    raise ValueError(f"unknown graph partitioner {method!r}; expected one of {GRAPH_PARTITIONERS}")


def owners(parts: list[np.ndarray], num_nodes: int) -> np.ndarray:
    """The client of each node; ValueError unless ``parts`` cover every node exactly once."""
    owner = np.full(num_nodes, -1, np.int64)
    for client, nodes in enumerate(parts):
        if np.any(owner[nodes] != -1):
            raise ValueError("a node belongs to two clients")
        owner[nodes] = client
    if np.any(owner < 0):
        raise ValueError(f"{int((owner < 0).sum())} nodes belong to no client")
    return owner


def graph_report(
    parts: list[np.ndarray], labels: np.ndarray, edges: np.ndarray, num_classes: int
) -> dict:
    """Nodes, internal edges, cut-edge fraction and label histogram per client."""
    owner = owners(parts, len(labels))
    src, dst = owner[edges[0]], owner[edges[1]]
    internal = np.bincount(src[src == dst], minlength=len(parts))
    cut = src != dst
    report = partition.partition_report(parts, labels, num_classes)
    report |= {
        "num_edges": int(edges.shape[1]),
        "internal_edges": internal.tolist(),
        "cut_edges": int(cut.sum()),
        "cut_edge_fraction": float(cut.mean()) if edges.size else 0.0,
    }
    return report
