"""The ``gcn`` task: Kipf & Welling's 2-layer GCN, federated over subgraphs of one graph.

Each client owns some nodes of a Planetoid graph and the edges incident to them. Two modes
(``graph.mode``):

- ``local``: FedAvg on each client's induced subgraph; cross-client edges are lost.
- ``precomm``: FedGCN's pre-communication (:mod:`.precomm`), the task's setup
  (:mod:`.setup`): before round 1 the clients' neighbour aggregates, with node-level feature
  DP noise (or, with ``graph.precomm-features = false``, only the degrees), are summed by
  the secure-sum service over the Grid. With ``graph.hops = 1`` a client keeps the
  first-layer aggregate of its nodes; with ``hops = 2`` also that of their neighbours.

Modules: :mod:`.model` (the GCN and its training), :mod:`.precomm` (the release),
:mod:`.setup` (the release as the task's setup), :mod:`.views` (what each client holds and
sees), :mod:`.data` (a run's clients), :mod:`.rules` (what the task refuses); its tables
``[model]`` and ``[graph]`` are in :mod:`fedcore.tasks.options`.
"""

from __future__ import annotations

from fedcore.tasks.base import Task
from fedcore.tasks.gcn.data import load_graph_data, load_graph_server
from fedcore.tasks.gcn.model import (
    GCN,
    GraphClientData,
    GraphView,
    build_model,
    evaluate,
    normalized_adjacency,
    train_kipf,
    train_one_client,
)
from fedcore.tasks.gcn.precomm import (
    clip_features,
    kept_rows,
    neighbour_contribution,
    node_share,
    precomm_client,
    precomm_event,
    precomm_noise_multiplier,
    precomm_report,
    precommunicate,
    share_stddev,
    shrink_release,
)
from fedcore.tasks.gcn.rules import check_config
from fedcore.tasks.gcn.setup import SETUP
from fedcore.tasks.gcn.views import (
    GraphPart,
    full_view,
    graph_part,
    local_client,
    precomm_view,
)
from fedcore.tasks.options import SECTIONS

TASK = Task(
    name="gcn",
    load_data=load_graph_data,
    build_model=build_model,
    train_one_client=train_one_client,
    evaluate=evaluate,
    train_one_client_dp=None,  # nodes are not independent samples: see the config check
    check_config=check_config,
    setup=SETUP,
    load_server=load_graph_server,
    sections=SECTIONS["gcn"],
)


__all__ = [
    "GCN",
    "SETUP",
    "TASK",
    "GraphClientData",
    "GraphPart",
    "GraphView",
    "build_model",
    "check_config",
    "clip_features",
    "evaluate",
    "full_view",
    "graph_part",
    "kept_rows",
    "load_graph_data",
    "local_client",
    "neighbour_contribution",
    "node_share",
    "normalized_adjacency",
    "precomm_client",
    "precomm_event",
    "precomm_noise_multiplier",
    "precomm_report",
    "precomm_view",
    "precommunicate",
    "share_stddev",
    "shrink_release",
    "train_kipf",
    "train_one_client",
]
