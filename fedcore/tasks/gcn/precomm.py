"""FedGCN's pre-communication (Yao et al. 2023) with node-level feature DP.

Every client contributes, for every node, the degree-scaled sum of its own nodes' features
among that node's neighbours (and their count); the total is computed with secure
aggregation, each contribution clipped and carrying a share of Gaussian noise sized for
``graph.precomm-epsilon``. A client then estimates each row it holds from its own terms and
the release (:func:`shrink_release`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse

from fedcore import seeding
from fedcore.config import RunConfig
from fedcore.datasets.planetoid import Graph
from fedcore.tasks.gcn.views import (
    GraphPart,
    graph_part,
    incident_edges,
    own_degrees,
    precomm_view,
    view_rows,
)

# Secure aggregation of the neighbour sums: entries are degree-scaled features (<= max degree)
# and neighbour counts; 12 fraction bits keep the counts exact after rounding.
PRECOMM_BOUND, PRECOMM_FRAC_BITS = 1024.0, 12

# Node-level feature DP: replace-one neighbouring (one node's features by any others), the
# ledger's "node" relation; the sensitivity is twice the clip norm.
_NODE = "node"


def clip_features(x: np.ndarray, clip: float) -> np.ndarray:
    """Each row of ``x`` scaled down to L2 norm <= ``clip`` (rows already within it are kept):
    the bound on one node's features that the pre-communication noise is sized for."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


def neighbour_contribution(part: GraphPart, degree: np.ndarray) -> np.ndarray:
    """A client's share of the pre-communication, shape (N, F + 1): row v holds the sum over
    v's neighbours u owned here (and v itself, if owned) of ``x_u / sqrt(d_u)``, and in the
    last column their count. Summed over clients: ``(A + I) D^-1/2 X`` and ``d``.

    ``degree`` is only read at the owned nodes, whose incident edges the client knows."""
    src, dst = incident_edges(part)  # u: owned neighbour, v: the row it adds to
    n = part.num_nodes
    adjacency = scipy.sparse.csr_matrix(  # (A + I) restricted to owned columns
        (np.ones(len(src)), (dst, src)), shape=(n, n)
    )
    scaled = np.zeros((n, part.num_features + 1))
    scaled[part.nodes, :-1] = part.x / np.sqrt(degree[part.nodes])[:, None]
    scaled[part.nodes, -1] = 1.0
    return np.asarray(adjacency @ scaled)


def node_share(
    part: GraphPart,
    clip: float | None,
    std: float,
    noise: np.random.Generator | None,
    features: bool = True,
) -> np.ndarray:
    """What the owner of ``part`` puts into the secure sum: its :func:`neighbour_contribution`
    of its features clipped to ``clip`` (None: unclipped), with its share of the Gaussian
    noise (std ``std``, from ``noise``) on the feature columns; ``features`` False: only the
    count column. Computed from the client's own part alone."""
    x = part.x if features else np.zeros((len(part.nodes), 0))
    if clip is not None and features:
        x = clip_features(x, clip)
    contribution = neighbour_contribution(dataclasses.replace(part, x=x), own_degrees(part))
    if std > 0 and features:
        contribution[:, :-1] += noise.normal(0.0, std, contribution[:, :-1].shape)
    if np.abs(contribution).max(initial=0.0) > PRECOMM_BOUND:
        raise ValueError(
            f"pre-communication entries exceed the secure-aggregation bound "
            f"{PRECOMM_BOUND}; lower graph.feature-clip (got {clip})"
        )
    return contribution


def share_stddev(noise_multiplier: float, clip: float, num_clients: int) -> float:
    """The std of each client's share of the pre-communication noise: any ``m - 1`` of the
    ``m`` shares sum to std ``noise_multiplier * clip``, so the noise protects a node against
    the server and against any one client, which knows its own share (one client: all)."""
    return noise_multiplier * clip / math.sqrt(max(num_clients - 1, 1))


def precomm_noise_multiplier(cfg: RunConfig) -> float:
    """The noise multiplier of the pre-communication: calibrated with the project's
    accountant for ``graph.precomm-epsilon`` at ``privacy.delta``, or the configured one."""
    g = cfg.graph
    if g.precomm_epsilon == 0:
        return g.precomm_noise_multiplier
    from privacy.accounting import calibrate_noise

    return calibrate_noise(
        g.precomm_epsilon, cfg.privacy.delta, 1.0, 1, cfg.privacy.accountant, "none", _NODE
    )


def precomm_event(cfg: RunConfig):
    """The pre-communication as a :class:`~privacy.ledger.DpEvent` (None without noise).

    One Gaussian release of ``S = (A + I) D^-1/2 clip(X)``: node v's features enter the
    ``d_v`` rows of v and its neighbours, each with weight ``1 / sqrt(d_v)``, so their L2
    sensitivity is ``||x_v - x_v'|| <= 2 * feature-clip`` under replace-one neighbouring (one
    node's features replaced by any others; the graph, hence every degree, is public to the
    release). Every row any party receives, at 1 or 2 hops, is a row of this one release; the
    GCN's propagations after it are post-processing. The run's ledger records it (round 0)."""
    z = precomm_noise_multiplier(cfg)
    if z == 0 or not cfg.graph.precomm_features:
        return None
    from privacy.ledger import DpEvent

    return DpEvent.gaussian(
        mechanism="gaussian",
        noise_multiplier=z,
        sample_rate=1.0,
        steps=1,
        clip_norm=cfg.graph.feature_clip,
        sampling="none",
        neighbouring=_NODE,
        round=0,
        client=None,
    )


def precomm_report(cfg: RunConfig) -> dict:
    """What the pre-communication released, for the run's partition report: its DP event
    and the epsilon the project's accountant gives it (None: exact aggregates, no bound)."""
    if not cfg.graph.precomm_features:  # nothing about features released: nothing to bound
        return {"event": None, "epsilon": 0.0, "delta": 0.0, "released": "degrees"}
    event = precomm_event(cfg)
    if event is None:
        return {"event": None, "epsilon": None, "delta": None, "released": "exact aggregates"}
    from privacy.accounting import epsilon

    eps = epsilon([event], cfg.privacy.delta, cfg.privacy.accountant)
    released = "noised aggregates"
    return {
        "event": event.to_dict(),
        "epsilon": eps,
        "delta": cfg.privacy.delta,
        "released": released,
    }


def precommunicate(
    graph: Graph,
    parts: list[np.ndarray],
    seed: int,
    *,
    clip: float | None = 1.0,
    noise_multiplier: float | None = None,
    seeded_noise: bool = False,
    features: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(D^-1/2 S, d)`` for every node, ``S = (A + I) D^-1/2 clip(X) + noise``: the
    release, computed in this one process with the secure-aggregation protocol run among
    the clients ``parts`` (each a node-id array). The reference for the run's own
    pre-communication, which sums the same :func:`node_share` vectors over the Grid
    (:data:`SETUP`).

    ``noise_multiplier`` None: the default ``graph.precomm-epsilon``'s calibration; 0: the
    exact aggregates, from which a neighbour reads foreign features. Noise comes from the
    OS CSPRNG unless ``seeded_noise``. ``features`` False: only the degree column is summed
    (the feature rows come back 0)."""
    from privacy.secagg.protocol import secure_sum
    from privacy.secagg.quantize import decode, encode, fixed_point

    if noise_multiplier is None:
        noise_multiplier = precomm_noise_multiplier(RunConfig(task="gcn"))
    if not features:
        noise_multiplier = 0.0
    if noise_multiplier > 0 and clip is None:
        raise ValueError("precommunicate: noise needs a feature clip (graph.feature-clip)")
    fp = fixed_point(len(parts), PRECOMM_BOUND, PRECOMM_FRAC_BITS)
    rng = seeding.numpy_rng(seed, seeding.SECAGG, 0)
    std = share_stddev(noise_multiplier, clip or 1.0, len(parts))
    inputs = {}
    for i, nodes in enumerate(parts):
        noise = seeding.noise_rng(seeded_noise, seed, seeding.SECAGG, i)
        share = node_share(graph_part(graph, nodes), clip, std, noise, features)
        inputs[i + 1] = encode(share.ravel(), fp, rng)
    total = decode(secure_sum(inputs, fp, seed=seed), fp).reshape(graph.num_nodes, -1)
    release = release_of(total, graph.x.shape[1], features)
    return release["ax"], release["degree"]


def release_of(total: np.ndarray, num_features: int, features: bool) -> dict[str, np.ndarray]:
    """The release from the decoded sum (N, F + 1): ``D^-1/2 S`` and the degrees."""
    d = np.rint(total[:, -1])
    if not features:
        return {"ax": np.zeros((len(d), num_features), np.float32), "degree": d}
    return {"ax": (total[:, :-1] / np.sqrt(d)[:, None]).astype(np.float32), "degree": d}


def shrink_release(
    ax: np.ndarray,
    own: np.ndarray,
    d: np.ndarray,
    clip: float,
    noise_std: float,
    min_weight: float = 0.01,
    mean_degree: float | None = None,
) -> np.ndarray:
    """The release's rows as one client estimates them: a prior from its own terms, moved
    toward the release by ``w_r = s_r / (s_r + F sigma^2)``.

    ``own`` is the client's :func:`neighbour_contribution` (its count in the last column).
    The prior imputes row r's foreign terms from its own ones (homophily: the unseen
    neighbours resemble the seen), ``own_r * d_r / count_r``; the release corrects it by
    ``w_r``, a heuristic share of signal in the release's remainder: ``s_r = clip^2 (d_r -
    count_r) / mean(d)`` estimates the energy of the foreign terms (each ``x_v / sqrt(d_v)``,
    ``||x_v|| <= clip``, taken as orthogonal, an unseen ``d_v`` at the mean) and ``F sigma^2``
    is the noise's. No noise:
    ``w = 1``, the release as is; a row with no foreign term: ``w = 0``, exact. The estimate
    reads only public quantities (degrees, clip, noise std) and the client's own data:
    post-processing of the release, no privacy cost. Weights under ``min_weight`` are set to
    0, which keeps bag-of-words rows sparse. The rows may be a subset of the graph's, given
    the graph's ``mean_degree`` (default: the mean of ``d``)."""
    foreign = d - own[:, -1]
    signal = clip**2 * foreign / (d.mean() if mean_degree is None else mean_degree)
    noise = noise_std**2 * ax.shape[1]
    weight = np.divide(signal, signal + noise, out=np.zeros_like(signal), where=foreign > 0)
    weight[weight < min_weight] = 0.0
    root = np.sqrt(d)[:, None]
    count = own[:, -1]
    extrapolate = np.divide(d, count, out=np.ones_like(d, dtype=float), where=count > 0)
    prior = own[:, :-1] * extrapolate[:, None]
    mixed = prior + weight[:, None] * (ax * root - prior)
    return (mixed / root).astype(np.float32)


def kept_rows(
    part: GraphPart,
    ax: np.ndarray,
    d: np.ndarray,
    hops: int,
    clip: float | None = None,
    noise_std: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the release (``ax``, ``d``: every node's) that the owner of ``part``
    trains on (:func:`~fedcore.tasks.gcn.views.view_rows`) and their degrees. With ``clip``
    (the release's feature clip) each row is rebuilt by :func:`shrink_release` from the
    client's own exact terms and the release's remainder; ``noise_std`` is the std of the
    release's noise per entry."""
    rows = view_rows(part, hops)
    x = ax[rows]
    if clip is not None:
        clipped = dataclasses.replace(part, x=clip_features(part.x, clip))
        own = neighbour_contribution(clipped, d)[rows]
        x = shrink_release(x, own, d[rows], clip, noise_std, mean_degree=float(d.mean()))
    return x, d[rows]


def precomm_client(
    part: GraphPart,
    ax: np.ndarray,
    d: np.ndarray,
    hops: int,
    clip: float | None = None,
    noise_std: float = 0.0,
):
    """A client's training data after pre-communication (:func:`kept_rows`, then
    :func:`~fedcore.tasks.gcn.views.precomm_view`)."""
    return precomm_view(part, *kept_rows(part, ax, d, hops, clip, noise_std), hops)
