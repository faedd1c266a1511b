"""FedGCN's pre-communication as the task's setup (:mod:`fedcore.tasks.setup`), over the Grid.

Each node sums its own nodes' clipped features into their neighbours' rows and adds its
share of the noise (:func:`~fedcore.tasks.gcn.precomm.node_share`); the secure-sum service
adds the nodes' vectors up; the server divides by the degrees and broadcasts the release;
each node keeps the rows it trains on, rebuilt from its own exact terms
(:func:`~fedcore.tasks.gcn.precomm.kept_rows`). No process reads another node's features.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedcore import seeding
from fedcore.config import RunConfig
from fedcore.tasks.gcn.data import load_graph_data
from fedcore.tasks.gcn.precomm import (
    PRECOMM_BOUND,
    PRECOMM_FRAC_BITS,
    kept_rows,
    node_share,
    precomm_event,
    precomm_noise_multiplier,
    release_of,
    share_stddev,
)
from fedcore.tasks.gcn.views import GraphPart, precomm_view
from fedcore.tasks.setup import Arrays, Setup, SumShape


def _dims(cfg: RunConfig) -> tuple[int, int]:
    """The graph's node and feature counts (public: the dataset's shape)."""
    part = load_graph_data(cfg).clients[0]
    return part.num_nodes, part.num_features


def _shape(cfg: RunConfig) -> SumShape:
    n, f = _dims(cfg)
    columns = f + 1 if cfg.graph.precomm_features else 1
    return SumShape(n * columns, PRECOMM_BOUND, PRECOMM_FRAC_BITS)


def _share(cfg: RunConfig, part: GraphPart, pid: int) -> np.ndarray:
    g = cfg.graph
    std = share_stddev(precomm_noise_multiplier(cfg), g.feature_clip, cfg.data.num_clients)
    noise = seeding.noise_rng(cfg.privacy.seeded_noise, cfg.seed, seeding.SECAGG, pid)
    return node_share(part, g.feature_clip, std, noise, g.precomm_features).ravel()


def _release(cfg: RunConfig, total: np.ndarray) -> Arrays:
    n, f = _dims(cfg)
    release = release_of(total.reshape(n, -1), f, cfg.graph.precomm_features)
    if not cfg.graph.precomm_features:  # nothing about features: the degrees alone
        del release["ax"]
    return release


def release_noise_std(cfg: RunConfig) -> float:
    """The std of the release's noise per entry: the sum of every node's share."""
    if not cfg.graph.precomm_features:
        return math.inf  # no feature rows: every client keeps its own prior
    m = cfg.data.num_clients
    return share_stddev(precomm_noise_multiplier(cfg), cfg.graph.feature_clip, m) * math.sqrt(m)


def _keep(cfg: RunConfig, part: GraphPart, release: Arrays) -> Arrays:
    d = np.asarray(release["degree"], np.float64)
    if d.shape != (part.num_nodes,) or not np.all(d >= 1):
        raise ValueError(f"degrees of shape {d.shape}, not ({part.num_nodes},) and >= 1")
    ax = release.get("ax")
    if ax is None:
        ax = np.zeros((part.num_nodes, part.num_features), np.float32)
    if ax.shape != (part.num_nodes, part.num_features) or not np.isfinite(ax).all():
        raise ValueError(f"aggregates of shape {ax.shape}, not finite or not the graph's")
    g = cfg.graph
    x, degree = kept_rows(part, ax, d, g.hops, g.feature_clip, release_noise_std(cfg))
    return {"x": x, "degree": degree}


def _view(cfg: RunConfig, part: GraphPart, kept: Arrays):
    client = precomm_view(part, kept["x"], kept["degree"], cfg.graph.hops)
    if cfg.graph.optimizer != "sgd":
        client = dataclasses.replace(client, optimizer=cfg.graph.optimizer)
    return client


SETUP = Setup(
    name="gcn-precomm",
    shape=_shape,
    share=_share,
    release=_release,
    keep=_keep,
    view=_view,
    events=lambda cfg: tuple(e for e in [precomm_event(cfg)] if e is not None),
    needed=lambda cfg: cfg.graph.mode == "precomm",
)
