"""An algorithm on typed statistics: a client hook, a server hook and the spec between them.

A round of any algorithm is: the server sends its global state (named arrays); each sampled
client computes :mod:`fedcore.statistics` from its own data; the run sums them (in the clear,
or under secure aggregation so the server sees the sum only, with the DP layers the run asks
for); the server hook turns the sums into the next global state. This is the shape of
pfl-research's ``train_one_user`` / ``process_aggregated_statistics``. The engines, the
privacy layers and secure aggregation only see these hooks, so an algorithm defined in a
user's own file (``task = "package.module:NAME"``) runs with no change to fedcore.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedcore.config import CLIENT_LEVEL_DP, ConfigError, RunConfig
from fedcore.statistics import Spec, Summed
from fedcore.tasks.base import ClientData, FederatedData, ModelShape, ServerData
from fedcore.tasks.setup import Setup

if TYPE_CHECKING:
    import torch

State = Mapping[str, np.ndarray]
Metrics = dict[str, float]


@dataclass(frozen=True)
class ExampleDp:
    """Sample-level DP-SGD for one client's round, as the node set it up: the mechanism's
    parameters (a ``clients.dp_training.DpSgdParams``: what its ledger records; typed loosely
    here, since the task layer imports neither side) and the generators of its Poisson
    batches and its noise (the OS CSPRNG, unless the experiments-only
    ``privacy.seeded-noise``)."""

    params: object
    batches: torch.Generator
    noise: torch.Generator


@dataclass(frozen=True)
class RoundContext:
    """What a client hook may know about its round beyond the state: the run config, the
    round number, the client's partition id (no other client's anything), and its local
    state.

    Attributes:
        local: arrays that never leave the node (the recommender's user factors), empty on
            the node's first round. The train hook updates it in place; the node keeps it
            in its ``Context.state`` for the next round and for evaluation.
        example_dp: under ``privacy.dp = "sample"`` or ``"sample-distributed"``, the DP-SGD
            the hook must train with (an algorithm with ``dp_sgd``); None otherwise.
    """

    cfg: RunConfig
    server_round: int
    partition_id: int
    local: dict[str, np.ndarray] = field(default_factory=dict)
    example_dp: ExampleDp | None = None


@dataclass(frozen=True)
class Algorithm:
    """The hooks of one algorithm (a task: :func:`fedcore.tasks.get_task` returns either).

    Attributes:
        name: the algorithm's name, for reports.
        load_data: the federated data from the run config (as for a :class:`Task`).
        init: ``(cfg, data, rng) -> state``: the first global state, from an explicit
            generator.
        spec: ``(cfg, state) -> Spec``: what every client sends for ``state``. The server
            computes it for itself; a client's reply is checked against it.
        client: ``(state, data, context, rng) -> (statistics, metrics)``: one client's
            statistics for the round (arrays as the spec says) and scalar metrics (not sent
            under DP: nothing noises them).
        server: ``(state, summed, cfg) -> (state, metrics)``: the next global state from the
            cohort's sums (under DP: the noised sums, so this is post-processing).
        evaluate: ``(state, x, y, cfg) -> metrics`` on the server's held-out set, or None.
        evaluate_client: ``(state, data, context) -> metrics`` on the client's own test
            split (weighted by its size), or None: clients are then not asked to evaluate.
        check_config: ``cfg -> None``, raising ConfigError for settings the algorithm
            cannot take, or None.
        node_files: whether a deployed node's own data file (``fedcore.datasets.node``: a
            classification client's arrays) can hold a client's data, as for a Task
            (a Task's, under FedAvg); else a node with one is refused rather than silently given
            a partition of the run's dataset.
        setup: a secure sum over every node before round 1 (:mod:`fedcore.tasks.setup`).
        load_server: the server's :class:`~fedcore.tasks.base.ServerData` without the
            clients' data, or None (then cut out of ``load_data``).
        strategies: the ``strategy.name`` values the server hook implements (its own
            optimizer, e.g. FedAdam); any other is refused before the run.
        server_only: name prefixes of state arrays that stay on the server (an optimizer's
            buffers): a client's state holds the rest.
        dp_sgd: whether the client hook trains with ``context.example_dp`` when it is set,
            so that sample-level DP (``privacy.dp = "sample"``, ``"sample-distributed"``)
            can run on it; the statistics then keep their example-count weights, which
            DP-SGD's accounting takes as public.
        wire_dtype: the dtype a client sends its wire vector in without secure aggregation:
            "float64", or "float32" for statistics of float32 precision anyway (a float32
            model's update), which halves the upload. The server sums in float64 either way;
            secure aggregation encodes from float64.
        sections: the algorithm's own configuration tables, name -> frozen dataclass of
            :func:`fedcore.config.option` fields, read as ``cfg.<name>``
            (:mod:`fedcore.config.sections`).
        record_sensitivity: ``(cfg, state) -> (l1, l2)``: how far, in L1 and L2 norm, the
            summed wire vector moves when one record (a point, a row of a count table) is
            added to or removed from one client's data, for the spec of ``state``; what
            ``privacy.dp = "record"`` scales its noise to. None: record-level DP is refused.
        finished: ``state -> bool``: whether ``state`` is final (a search at its optimum,
            Lloyd's at a fixed point), so that the run ends after the round that reached it
            (its record says so) rather than resend the same statistics (and, under DP,
            spend budget on them); None: the run takes ``train.rounds``.
        node_state: whether the client hook keeps arrays on the node between rounds
            (``context.local``, the recommender's user factors), which a resumed run needs
            back: an engine that cannot snapshot its nodes cannot resume it.
        compressible: whether its real statistics may travel compressed
            (``compression.*``): unbounded real arrays (a model's update), whose decoded
            values no bound check can refuse. Bounded sums (k-means, count tables) are not.
    """

    name: str
    load_data: Callable[[RunConfig], FederatedData]
    init: Callable[[RunConfig, ModelShape, np.random.Generator], dict[str, np.ndarray]]
    spec: Callable[[RunConfig, State], Spec]
    client: Callable[
        [State, ClientData, RoundContext, np.random.Generator],
        tuple[dict[str, np.ndarray], Metrics],
    ]
    server: Callable[[State, Summed, RunConfig], tuple[dict[str, np.ndarray], Metrics]]
    evaluate: Callable[[State, object, object, RunConfig], Metrics] | None = None
    evaluate_client: Callable[[State, ClientData, RoundContext], Metrics] | None = None
    check_config: Callable[[RunConfig], None] | None = None
    node_files: bool = False
    setup: Setup | None = None
    load_server: Callable[[RunConfig], ServerData] | None = None
    strategies: tuple[str, ...] = ("fedavg",)
    server_only: tuple[str, ...] = ()
    dp_sgd: bool = False
    wire_dtype: str = "float64"
    sections: Mapping[str, type] = field(default_factory=dict)
    record_sensitivity: Callable[[RunConfig, State], tuple[float, float]] | None = None
    finished: Callable[[State], bool] | None = None
    node_state: bool = False
    compressible: bool = False

    def __post_init__(self) -> None:
        if self.wire_dtype not in ("float64", "float32"):
            raise ValueError(
                f"Algorithm.wire_dtype must be 'float64' or 'float32', got {self.wire_dtype!r}"
            )

    def client_state(self, state: Mapping[str, object]) -> dict:
        """``state`` without its `server_only` arrays: what a client receives."""
        return {k: v for k, v in state.items() if not k.startswith(self.server_only)}


def update_bound(cfg: RunConfig) -> float:
    """The public bound on each entry of a real update (a model's, a gradient): under
    secure aggregation ``secagg.bound``, its encoding's range; else none (``math.inf``:
    nothing is clipped per coordinate, as Flower's FedAvg clips nothing)."""
    return cfg.secagg.bound if cfg.secagg.mode != "off" else math.inf


def dp_denominator(cfg: RunConfig, summed: Summed) -> float:
    """What a mean of unweighted client-level-DP statistics divides their noised sum by:
    the planned cohort under central and distributed DP, so that one client moves the mean
    by at most clip / cohort however many reply (the sensitivity the noise is sized for),
    and the clients in the sum under local DP, whose clients each noised their own."""
    if cfg.privacy.dp == "local":
        return float(max(summed.clients, 1))
    return float(cfg.planned_cohort)


def check_algorithm_config(algorithm: Algorithm, cfg: RunConfig) -> None:
    """ConfigError for what ``algorithm`` cannot take, refused before the run starts: a
    strategy its server hook does not implement, sample-level DP without DP-SGD, and under
    DP evaluation on the clients (an algorithm without ``evaluate_client`` asks none)."""
    p, name = cfg.privacy, algorithm.name
    if cfg.strategy.name not in algorithm.strategies:
        raise ConfigError(
            f"algorithm {name!r} aggregates with its own server hook, which implements "
            f"strategy.name = {' or '.join(map(repr, algorithm.strategies))}, not "
            f"{cfg.strategy.name!r}"
        )
    if p.dp == "record" and algorithm.record_sensitivity is None:
        raise ConfigError(
            f"algorithm {name!r} declares no record sensitivity: privacy.dp = 'record' is for "
            "sums whose change by one record is bounded (kmeans, bayesnet); use 'client', "
            "'distributed' or 'local'"
        )
    if p.dp not in ("off", "record") and p.dp not in CLIENT_LEVEL_DP and not algorithm.dp_sgd:
        raise ConfigError(
            f"algorithm {name!r} has no per-example mechanism (DP-SGD): privacy.dp = {p.dp!r} "
            f"is for model training; use 'client', 'distributed' or 'local'"
        )
    c = cfg.compression
    if (c.uplink != "none" or c.downlink != "none") and not algorithm.compressible:
        raise ConfigError(
            f"algorithm {name!r} sends bounded statistics, which the server checks entry by "
            "entry; compressed, they would decode past their bounds: compression.uplink and "
            "compression.downlink are for model tasks (FedAvg and its server optimizers)"
        )
    evaluates = algorithm.evaluate_client is not None and cfg.evaluate.fraction > 0
    if p.dp != "off" and evaluates and not p.clear_evaluation:
        raise ConfigError(
            f"evaluate.fraction = {cfg.evaluate.fraction:g} with privacy.dp = {p.dp!r}: client "
            "evaluation replies carry each client's test-set size and un-noised loss and "
            "accuracy, which no DP mechanism covers; set evaluate.fraction = 0 "
            "(evaluate.server still tests the model on held-out data), or in a simulation "
            "privacy.clear-evaluation = true to measure it anyway"
        )
