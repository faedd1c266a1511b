"""The built-in tasks' own configuration tables (:mod:`fedcore.config.sections`).

Each task declares its tables in its ``sections``; the classes live here, in one module that
imports no torch, because every process parses the run config (a deployed node starts one
per message, and its secure-aggregation stages never train).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import option
from fedcore.tasks.bayesnet.options import BayesNetOptions
from fedcore.tasks.kmeans.options import KMeansOptions
from fedcore.tasks.linear.options import LinearOptions

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class MLPModelOptions:
    """Table ``[model]`` of task ``mlp`` (and of fedsgd, on its model)."""

    hidden: tuple[int, ...] = option([200, 200], doc="mlp: hidden layer widths")
    activation: str = option(
        "relu",
        choices=ACTIVATIONS,
        doc="mlp: hidden activation (tanh often trains better under DP-SGD)",
    )


@dataclass(frozen=True)
class MFModelOptions:
    """Table ``[model]`` of task ``mf``."""

    hidden: tuple[int, ...] = option(
        [200, 200], doc="mf: the factors' dimension, as a one-entry list"
    )


@dataclass(frozen=True)
class GCNModelOptions:
    """Table ``[model]`` of task ``gcn``."""

    hidden: tuple[int, ...] = option(
        [200, 200], doc="gcn: the hidden layer's width, as a one-entry list"
    )
    dropout: float = option(0.5, ge=0, le=0.95, doc="gcn: dropout on the inputs of both layers")


@dataclass(frozen=True)
class GraphOptions:
    """Table ``[graph]``: how the clients see the graph, FedGCN's pre-communication."""

    mode: str = option(
        "local",
        choices=("local", "precomm"),
        doc="gcn: local (FedAvg on induced subgraphs) or precomm (FedGCN's neighbour "
        "aggregates, through secure aggregation, before training)",
    )
    hops: int = option(2, ge=1, le=2, doc="gcn precomm: neighbourhood completed for 1 or 2 layers")
    feature_clip: float = option(
        4.0,
        gt=0,
        doc="gcn precomm: each node's feature vector is scaled to L2 norm <= this (Cora's "
        "binary rows hold 18 words on average, norm about 4.3)",
    )
    precomm_features: bool = option(
        True,
        doc="gcn precomm: release the noised feature aggregates; false: only the degrees "
        "(each client imputes foreign terms from its own; no feature privacy spent)",
    )
    precomm_epsilon: float = option(
        8.0,
        ge=0,
        doc="gcn precomm: node-level feature DP of the aggregates (replace one node's "
        "features, at privacy.delta); calibrates the noise; 0: use precomm-noise-multiplier",
    )
    precomm_noise_multiplier: float = option(
        0.0,
        ge=0,
        doc="gcn precomm, precomm-epsilon = 0: Gaussian noise std / feature-clip on the "
        "aggregates; 0: no noise (the aggregates reveal foreign features)",
    )
    optimizer: str = option(
        "sgd",
        choices=("sgd", "adam"),
        doc="gcn: local optimizer; adam is Kipf & Welling's (with train.lr 0.01)",
    )


# name -> its tables, per built-in task
SECTIONS = {
    "mlp": {"model": MLPModelOptions},
    "gcn": {"model": GCNModelOptions, "graph": GraphOptions},
    "mf": {"model": MFModelOptions},
    "kmeans": {"kmeans": KMeansOptions},
    "bayesnet": {"bayesnet": BayesNetOptions},
    "linear": {"linear": LinearOptions},
}
# the algorithms built on a task's model read the task's tables
SECTIONS |= {"fedsgd": SECTIONS["mlp"]}
