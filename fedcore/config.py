"""Typed run configuration: frozen dataclasses, parsed and validated once at the boundary.

Scenario TOML files, ``--set key=value`` overrides and Flower's flat ``run_config`` are only
transport. They all go through :func:`parse_config`, which reports any unknown key, wrong type or
out-of-range value with the key, the value and what is allowed. Algorithms only see the typed
:class:`RunConfig`.

Keys are the field names with ``-`` for ``_``, grouped in TOML tables (``[train] local-epochs``)
or flattened with dots (``train.local-epochs``), which is also the form of Flower's run config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcore.datasets import DATASETS
from fedcore.datasets.planetoid import NAMES as GRAPH_DATASETS
from fedcore.graph_partition import GRAPH_PARTITIONERS
from fedcore.partition import PARTITIONERS

STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
)
# Strategies whose server math needs each client's update, not only the (noised or masked) sum.
NEEDS_INDIVIDUAL_UPDATES = frozenset({"fedmedian", "fedtrimmedavg", "krum"})
# privacy.dp modes whose unit of privacy is a client's whole data (not one example).
CLIENT_LEVEL_DP = frozenset({"client", "distributed", "local"})
# Strategies whose server optimizer keeps state built from the mean it aggregates.
SERVER_OPTIMIZERS = frozenset({"fedavgm", "fedadam", "fedyogi", "fedadagrad"})
ENGINES = ("inprocess", "ray")
TASKS = ("mlp", "gcn", "mf")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key and what is allowed."""


def _opt(
    default: Any,
    *,
    choices: tuple = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    doc: str = "",
    or_pattern: tuple[str, str] | None = None,
) -> Any:
    """A dataclass field carrying its validation rules and a one-line description.

    ``or_pattern`` is ``(regex, description)``: a string matching it is allowed besides the
    ``choices`` (a task named by its import path)."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "doc": doc, "or": or_pattern}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _opt(
        "digits",
        choices=(*DATASETS, "files", *GRAPH_DATASETS, "ml-100k"),
        doc="dataset of the task (graphs: gcn; ratings: mf); files: your own, data.train-file",
    )
    train_file: str = _opt(
        "",
        doc="dataset files: NPZ (x, y, client), CSV (header; label and client columns) or "
        "'samples,labels' IDX; a path may end in #sha256=<hex> to pin it",
    )
    test_file: str = _opt(
        "", doc="dataset files: the server's test set, as train-file; empty: hold out part"
    )
    test_fraction: float = _opt(
        0.2, gt=0, le=0.9, doc="dataset files, no test-file: share of train-file held out"
    )
    label_column: str = _opt("label", doc="dataset files, CSV: the label column")
    client_column: str = _opt(
        "", doc="dataset files: the CSV column giving each sample's natural client (optional)"
    )
    split: str = _opt(
        "u1",
        choices=("u1", "u2", "u3", "u4", "u5", "ua", "ub"),
        doc="ml-100k: the official train/test split",
    )
    num_clients: int = _opt(10, ge=1, doc="number of clients (partitions)")
    partition: str = _opt(
        "dirichlet",
        choices=tuple(dict.fromkeys(PARTITIONERS + GRAPH_PARTITIONERS)),
        doc="how data is split (graphs: louvain, dirichlet or iid over nodes)",
    )
    alpha: float = _opt(0.5, gt=0, doc="Dirichlet concentration (dirichlet, quantity)")
    shards_per_client: int = _opt(2, ge=1, doc="label shards per client (shards)")
    min_size: int = _opt(2, ge=1, doc="minimum samples per client (dirichlet, quantity)")
    local_test_fraction: float = _opt(
        0.2, ge=0, le=0.9, doc="share of each client's data kept for client-side evaluation"
    )
    data_dir: str = _opt("", doc="data folder; empty: $FEDCORE_DATA, ../shared/data, cache")
    download: bool = _opt(False, doc="download a missing dataset from its original source")


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = _opt([200, 200], doc="hidden layer widths (gcn: one layer)")
    activation: str = _opt(
        "relu",
        choices=("relu", "tanh"),
        doc="hidden activation (tanh often trains better under DP-SGD)",
    )
    dropout: float = _opt(0.5, ge=0, le=0.95, doc="gcn: dropout on the inputs of both layers")


@dataclass(frozen=True)
class GraphConfig:
    mode: str = _opt(
        "local",
        choices=("local", "precomm"),
        doc="gcn: local (FedAvg on induced subgraphs) or precomm (FedGCN's neighbour "
        "aggregates, through secure aggregation, before training)",
    )
    hops: int = _opt(2, ge=1, le=2, doc="gcn precomm: neighbourhood completed for 1 or 2 layers")
    feature_clip: float = _opt(
        4.0,
        gt=0,
        doc="gcn precomm: each node's feature vector is scaled to L2 norm <= this (Cora's "
        "binary rows hold 18 words on average, norm about 4.3)",
    )
    precomm_features: bool = _opt(
        True,
        doc="gcn precomm: release the noised feature aggregates; false: only the degrees "
        "(each client imputes foreign terms from its own; no feature privacy spent)",
    )
    precomm_epsilon: float = _opt(
        8.0,
        ge=0,
        doc="gcn precomm: node-level feature DP of the aggregates (replace one node's "
        "features, at privacy.delta); calibrates the noise; 0: use precomm-noise-multiplier",
    )
    precomm_noise_multiplier: float = _opt(
        0.0,
        ge=0,
        doc="gcn precomm, precomm-epsilon = 0: Gaussian noise std / feature-clip on the "
        "aggregates; 0: no noise (the aggregates reveal foreign features)",
    )
    optimizer: str = _opt(
        "sgd",
        choices=("sgd", "adam"),
        doc="gcn: local optimizer; adam is Kipf & Welling's (with train.lr 0.01)",
    )


@dataclass(frozen=True)
class TrainConfig:
    rounds: int = _opt(20, ge=1, doc="federated rounds")
    local_epochs: int = _opt(3, ge=1, doc="local epochs per round")
    batch_size: int = _opt(16, ge=1, doc="local mini-batch size")
    lr: float = _opt(0.05, gt=0, doc="client learning rate (SGD)")
    momentum: float = _opt(0.9, ge=0, le=1, doc="client SGD momentum")
    weight_decay: float = _opt(0.0, ge=0, doc="client L2 weight decay")
    fraction: float = _opt(1.0, gt=0, le=1, doc="fraction of clients sampled per round")
    min_clients: int = _opt(1, ge=1, doc="minimum clients per round (fixed-size sampling)")
    sampling: str = _opt(
        "fixed-size",
        choices=("fixed-size", "poisson"),
        doc="client sampling: a fixed-size cohort without replacement, or each client "
        "independently with probability fraction (Poisson, what DP amplification assumes)",
    )
    target_accuracy: float = _opt(
        0.0, ge=0, le=1, doc="stop once the server test accuracy reaches this (0: never)"
    )
    # 5: a healthy cohort of k clients failing independently at rate p aborts a round with
    # probability p^k, five in a row p^(5k) (about 1e-6 for k = 3 at p = 0.4); a
    # systematic failure (a crashing client, an unreachable secure-aggregation threshold)
    # aborts every round and stops after five instead of spending the whole run.
    # A round that sampled nobody (Poisson sampling) is not a failure and is not counted.
    max_failed_rounds: int = _opt(
        5,
        ge=0,
        doc="the run fails after this many rounds in a row that sampled clients but "
        "aggregated no update (0: only if no round aggregated one)",
    )


@dataclass(frozen=True)
class EvaluateConfig:
    fraction: float = _opt(1.0, ge=0, le=1, doc="fraction of clients evaluating per round")
    server: bool = _opt(True, doc="evaluate the global model on the held-out test set")


@dataclass(frozen=True)
class StrategyConfig:
    name: str = _opt("fedavg", choices=STRATEGIES, doc="server strategy")
    proximal_mu: float = _opt(0.01, ge=0, doc="FedProx proximal weight")
    server_lr: float = _opt(
        1.0, gt=0, doc="server learning rate (fedavgm; the mf task's per-item FedAvg)"
    )
    eta: float = _opt(0.01, gt=0, doc="FedAdam/FedYogi/FedAdagrad server learning rate")
    server_momentum: float = _opt(0.9, ge=0, le=1, doc="FedAvgM server momentum")
    beta_1: float = _opt(0.9, ge=0, le=1, doc="FedAdam/FedYogi first-moment decay")
    beta_2: float = _opt(0.99, ge=0, le=1, doc="FedAdam/FedYogi second-moment decay")
    tau: float = _opt(1e-3, gt=0, doc="FedOpt adaptivity")
    trim_beta: float = _opt(0.2, ge=0, le=0.49, doc="FedTrimmedAvg fraction cut at each end")
    num_malicious: int = _opt(0, ge=0, doc="Krum: assumed number of malicious clients")


@dataclass(frozen=True)
class EngineConfig:
    name: str = _opt("inprocess", choices=ENGINES, doc="execution engine")
    workers: int = _opt(1, ge=1, doc="worker processes (inprocess) / concurrent actors (ray)")
    threads: int = _opt(1, ge=1, doc="torch threads per worker")
    timeout: float = _opt(
        0.0,
        ge=0,
        doc="seconds each exchange of a round waits for replies (deployed runs: a node that "
        "dies never replies); 0: no limit",
    )
    poll_interval: float = _opt(
        0.0,
        ge=0,
        le=10,
        doc="deployed runs: seconds between the server's checks for replies; 0: Flower's "
        "own send_and_receive (every 3 s; shorter intervals measured no faster here)",
    )


@dataclass(frozen=True)
class FaultConfig:
    client_failure_rate: float = _opt(
        0.0, ge=0, le=1, doc="simulation only: chance that a sampled client crashes in a round"
    )
    crash_stage: str = _opt(
        "train",
        choices=("train", "share-keys", "masked-input", "unmask"),
        doc="the message at which a failing client crashes (stages after train: secure "
        "aggregation only)",
    )


@dataclass(frozen=True)
class SecAggConfig:
    mode: str = _opt(
        "off",
        choices=("off", "full", "sparse"),
        doc="secure aggregation: off; full (every pair of clients masks, Bonawitz et al. "
        "2017); sparse (SecAgg+: O(log n) neighbours each, Bell et al. 2020)",
    )
    threshold: float = _opt(
        0.5,
        gt=0,
        le=0.95,
        doc="a client's secrets need more than this fraction of its holders (it and its "
        "neighbours); at least 0.5 unless insecure-demo",
    )
    degree: int = _opt(
        0,
        ge=0,
        doc="sparse: neighbours per client, at least 4 unless insecure-demo; 0: 2 ceil(log2 n) + 2",
    )
    bound: float = _opt(1.0, gt=0, doc="each update coordinate is clipped to [-bound, bound]")
    frac_bits: int = _opt(20, ge=1, le=40, doc="fixed-point fraction bits of the encoding")
    max_weight: float = _opt(
        10000.0,
        gt=0,
        doc="public bound on a client's weight (num-examples; mf: also its rater count per "
        "item); clients send weight / max-weight",
    )
    clear_metrics: bool = _opt(
        True,
        doc="send the training metrics (loss, time, number of examples; under DP only the "
        "client's epsilon) in the clear beside the masked update; false: none (the weight "
        "still reaches the server masked, in the sum)",
    )
    insecure_demo: bool = _opt(
        False,
        doc="simulation only: lift the security floor (threshold >= 0.5, cohort >= 3, degree "
        ">= 4, t + 1 surviving holders); refused by deployed runs",
    )


@dataclass(frozen=True)
class PrivacyConfig:
    dp: str = _opt(
        "off",
        choices=("off", "sample", "sample-distributed", "client", "local", "distributed"),
        doc="differential privacy: off; sample (DP-SGD on clients, one example protected); "
        "sample-distributed (one DP-SGD step per round whose noise the clients share under "
        "secure aggregation, so the sum is a step of central DP-SGD); client (DP-FedAvg, one "
        "client protected, noise added by the server); local (each client clips and noises "
        "its update before sending it); distributed (client-level, each client adds its "
        "share of the noise under secure aggregation)",
    )
    noise_multiplier: float = _opt(
        0.0, ge=0, doc="noise std / clip norm; 0: calibrate to target-epsilon"
    )
    clip_norm: float = _opt(
        0.0, ge=0, doc="clip norm (required with dp): per example (sample) or per update"
    )
    target_epsilon: float = _opt(
        0.0, ge=0, doc="calibrate the noise so the planned run spends this epsilon"
    )
    delta: float = _opt(1e-5, gt=0, le=0.1, doc="delta of the (epsilon, delta) guarantee")
    sample_rate: float = _opt(
        0.0, ge=0, le=1, doc="dp = sample: Poisson rate per step; 0: batch-size / client size"
    )
    budget_epsilon: float = _opt(
        0.0,
        ge=0,
        doc="a round that would take a client past this is declined by the client (sample, "
        "local) or ends the run (client); 0: no limit",
    )
    dropout_tolerance: float = _opt(
        0.0,
        ge=0,
        le=0.9,
        doc="sample-distributed, distributed: share of the cohort that may drop out; clients "
        "add enough noise for the rest, and a sum of fewer clients is not released",
    )
    accountant: str = _opt("rdp", choices=("rdp", "prv"), doc="privacy accountant")
    clipping: str = _opt(
        "server",
        choices=("server", "client"),
        doc="dp = client: where updates are clipped (client: Flower's clipping mods)",
    )
    adaptive: bool = _opt(
        False, doc="dp = client: adapt the clip norm to a quantile (Andrew et al. 2021)"
    )
    target_quantile: float = _opt(
        0.5, ge=0, le=1, doc="adaptive: fraction of updates left unclipped"
    )
    clip_lr: float = _opt(0.2, gt=0, doc="adaptive: geometric learning rate of the clip norm")
    count_stddev: float = _opt(
        0.0, ge=0, doc="adaptive: noise std of the unclipped count; 0: expected cohort / 20"
    )
    calibration_quantile: float = _opt(
        0.9,
        gt=0,
        le=1,
        doc="target-epsilon (sample, local): calibrate for this quantile of a client's "
        "number of rounds; a client that would pass its budget (default: the target) declines",
    )
    clear_evaluation: bool = _opt(
        False,
        doc="simulation only: let DP clients evaluate and reply with un-noised test metrics "
        "(covered by no DP mechanism; the report says so); deployed nodes refuse it",
    )
    seeded_noise: bool = _opt(
        False,
        doc="experiments only: draw DP noise, and under DP the client cohorts and DP-SGD "
        "batches, from the run seed (reproducible, but anyone who knows the seed can remove "
        "the noise and recompute who was sampled, so the run has no guarantee); default: the "
        "OS CSPRNG",
    )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; the single typed source of truth."""

    task: str = _opt(
        "mlp",
        choices=TASKS,
        or_pattern=(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "'package.module:NAME' (your own Task)"),
        doc="task: data + model + local training",
    )
    seed: int = _opt(0, ge=0, doc="run seed; client generators derive from it")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def planned_cohort(self) -> float:
        """The clients a training round samples: ``max(fraction * n, min-clients)`` of the n
        (at most n) for a fixed-size cohort, ``fraction * n`` in expectation for Poisson."""
        n, t = self.data.num_clients, self.train
        if t.sampling == "poisson":
            return n * t.fraction
        return min(n, max(int(n * t.fraction), t.min_clients))


def _key(name: str) -> str:
    return name.replace("_", "-")


def _allowed(f: dataclasses.Field, hint: Any) -> str:
    m = f.metadata
    if m.get("choices"):
        extra = f", or {m['or'][1]}" if m.get("or") else ""
        return "one of " + ", ".join(repr(c) for c in m["choices"]) + extra
    bounds = [
        f">= {m['ge']}" if m.get("ge") is not None else "",
        f"> {m['gt']}" if m.get("gt") is not None else "",
        f"<= {m['le']}" if m.get("le") is not None else "",
    ]
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "a non-empty list of integers >= 1"
    )
    return " ".join([kind, *[b for b in bounds if b]])


def _coerce(value: Any, hint: Any, key: str, allowed: str) -> Any:
    """Convert a transported value to the field's type, refusing lossy conversions."""
    bad = ConfigError(f"{key} = {value!r} is invalid: expected {allowed}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad
        try:
            return int(value)
        except ValueError:
            raise bad from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        try:
            number = float(value)
        except ValueError:
            raise bad from None
        if not math.isfinite(number):
            raise bad
        return number
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    # tuple[int, ...]: a TOML list, or "200,200" from a flat run config
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise bad
    try:
        return tuple(
            _coerce(v.strip() if isinstance(v, str) else v, int, key, allowed) for v in items
        )
    except ConfigError:
        raise bad from None


def _check_range(value: Any, f: dataclasses.Field, key: str, allowed: str) -> None:
    m = f.metadata
    if isinstance(value, tuple):
        ok = all(v >= 1 for v in value)
    elif isinstance(value, bool | str):
        ok = not m.get("choices") or value in m["choices"]
        ok = ok or bool(m.get("or") and re.fullmatch(m["or"][0], str(value)))
    else:
        ok = (
            (m.get("ge") is None or value >= m["ge"])
            and (m.get("gt") is None or value > m["gt"])
            and (m.get("le") is None or value <= m["le"])
        )
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"{key} = {shown!r} is out of range: expected {allowed}")


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {_key(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} in {where}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for k, v in raw.items():
        f, hint, key = fields[k], hints[fields[k].name], prefix + k
        if dataclasses.is_dataclass(hint):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} must be a table of settings, got {v!r}")
            kwargs[f.name] = _build(hint, v, key + ".")
            continue
        if isinstance(hint, types.GenericAlias):  # tuple[int, ...]
            hint = tuple
        allowed = _allowed(f, hint)
        value = _coerce(v, hint, key, allowed)
        _check_range(value, f, key, allowed)
        kwargs[f.name] = value
    return cls(**kwargs)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"train.lr": 0.1}`` into ``{"train": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key} conflicts with the scalar setting {p}")
        node[parts[-1]] = value
    return out


def parse_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Validate a nested or flat mapping (plus dotted overrides) into a :class:`RunConfig`."""
    merged = _nest({**_flatten(raw), **_flatten(overrides or {})})
    cfg = _build(RunConfig, merged, "")
    _check_combination(cfg)
    return cfg


def _check_combination(cfg: RunConfig) -> None:
    """Settings that are valid alone but not together."""
    if cfg.train.target_accuracy > 0 and not cfg.evaluate.server:
        raise ConfigError(
            "train.target-accuracy needs evaluate.server = true (it reads the "
            "server's test accuracy)"
        )
    _check_privacy(cfg.privacy)
    _check_task(cfg)
    _check_secagg(cfg)
    _check_sample_distributed(cfg)
    if cfg.privacy.dp == "distributed" and cfg.secagg.mode == "off":
        raise ConfigError(
            "privacy.dp = 'distributed' needs secure aggregation (secagg.mode = 'full' or "
            "'sparse'): each client's share of the noise is too small to protect it alone"
        )
    if (
        cfg.privacy.dp in ("client", "distributed")
        and cfg.strategy.name in NEEDS_INDIVIDUAL_UPDATES
    ):
        raise ConfigError(
            f"privacy.dp = 'client' adds noise to the sum of clipped updates, but strategy "
            f"{cfg.strategy.name!r} needs each client's update; use a FedAvg-family strategy"
        )
    if cfg.privacy.dp == "client" and cfg.strategy.name in SERVER_OPTIMIZERS:
        raise ConfigError(
            f"privacy.dp = 'client' noises the strategy's output, but {cfg.strategy.name!r} "
            "steps its server optimizer with the mean before the noise and carries it into "
            "later rounds, un-noised; use 'fedavg' or 'fedprox', or privacy.dp = 'distributed' "
            "(the clients' updates carry the noise)"
        )
    if (
        cfg.privacy.dp in ("client", "distributed")
        and cfg.train.sampling == "fixed-size"
        and cfg.privacy.accountant != "rdp"
    ):
        raise ConfigError(
            "fixed-size client sampling is accounted with dp-accounting's RDP bound for "
            "sampling without replacement; set privacy.accountant = 'rdp' or "
            "train.sampling = 'poisson'"
        )
    _check_files(cfg.data)
    if cfg.data.partition == "natural" and cfg.data.dataset not in ("femnist", "ml-100k", "files"):
        raise ConfigError(
            f"data.partition = 'natural' needs a dataset with natural clients "
            f"(femnist, ml-100k, or files with client ids), not {cfg.data.dataset!r}"
        )
    _check_client_evaluation(cfg)


def _check_files(d: DataConfig) -> None:
    """Your own files are named only with data.dataset = 'files', and then must be."""
    if d.dataset == "files" and not d.train_file:
        raise ConfigError(
            "data.dataset = 'files' reads data.train-file (NPZ, CSV or 'samples,labels' IDX); "
            "it is empty"
        )
    if d.dataset != "files" and (d.train_file or d.test_file):
        raise ConfigError(
            f"data.train-file and data.test-file are read with data.dataset = 'files' only, "
            f"not {d.dataset!r}"
        )


def _check_sample_distributed(cfg: RunConfig) -> None:
    """Distributed DP-SGD is a step of central DP-SGD only if every client takes exactly one
    step at the same sampling rate and only the sum is seen."""
    p = cfg.privacy
    if p.dp != "sample-distributed":
        if p.dropout_tolerance > 0 and p.dp != "distributed":
            raise ConfigError(
                f"privacy.dropout-tolerance applies to privacy.dp = 'sample-distributed' or "
                f"'distributed' only (privacy.dp is {p.dp!r})"
            )
        return
    need = [
        ("secagg.mode = 'full' or 'sparse'", cfg.secagg.mode != "off"),
        ("privacy.sample-rate > 0 (every client samples at the same rate)", p.sample_rate > 0),
        ("train.local-epochs = 1 (a round is one step)", cfg.train.local_epochs == 1),
        ("train.fraction = 1 (the whole cohort shares the noise)", cfg.train.fraction == 1),
    ]
    missing = [what for what, ok in need if not ok]
    if missing:
        raise ConfigError(
            "privacy.dp = 'sample-distributed' runs one DP-SGD step per round whose noise the "
            "clients share under secure aggregation; it needs " + "; ".join(missing)
        )


def _check_task(cfg: RunConfig) -> None:
    """The task, its data and its settings must fit together."""
    graph_data = cfg.data.dataset in GRAPH_DATASETS
    if cfg.task == "gcn":
        if cfg.graph.mode == "precomm" and cfg.data.num_clients < 3:
            raise ConfigError(  # FedGCN's pre-communication is a secure sum over every client
                f"graph.mode = 'precomm' sums the clients' neighbour aggregates securely, "
                f"which needs at least 3 clients (data.num-clients = {cfg.data.num_clients}): "
                f"with two, each reads the other's from the sum"
            )
        if not graph_data:
            raise ConfigError(
                f"task 'gcn' needs a graph dataset ({', '.join(GRAPH_DATASETS)}), "
                f"not data.dataset = {cfg.data.dataset!r}"
            )
        if cfg.data.partition not in GRAPH_PARTITIONERS:
            raise ConfigError(
                f"data.partition = {cfg.data.partition!r} does not split graphs; use one of "
                f"{', '.join(GRAPH_PARTITIONERS)}"
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
    elif cfg.task == "mf":
        if cfg.data.dataset != "ml-100k" or cfg.data.partition not in ("natural", "iid"):
            raise ConfigError(
                "task 'mf' reads data.dataset = 'ml-100k' with data.partition = 'natural' "
                "(one user per client) or 'iid' (random silos of users)"
            )
        if cfg.evaluate.server:
            raise ConfigError(
                "task 'mf' needs evaluate.server = false: the users' factors never leave "
                "their clients, so only the clients can predict their ratings"
            )
        if len(cfg.model.hidden) != 1 or cfg.strategy.name != "fedavg":
            raise ConfigError(
                "task 'mf' takes model.hidden = [dimension] and strategy 'fedavg' (its item "
                "rows are averaged over the clients that rated them)"
            )
        if cfg.privacy.dp in ("sample", "sample-distributed"):
            raise ConfigError(
                "task 'mf' takes user-level DP (privacy.dp = 'local', 'distributed' or "
                f"'client'), not {cfg.privacy.dp!r}: a user's ratings are one unit of privacy"
            )
        if cfg.privacy.dp == "local" and cfg.secagg.mode != "off":
            raise ConfigError(
                "task 'mf' takes secure aggregation or local DP, not both: local DP noises each "
                "update for release in the clear; under secure aggregation use privacy.dp = "
                "'distributed', where each client adds only its share of the noise"
            )
    elif graph_data or cfg.data.partition == "louvain" or cfg.data.dataset == "ml-100k":
        raise ConfigError(
            f"task {cfg.task!r} does not read graphs; data.dataset = {cfg.data.dataset!r} and "
            f"data.partition = {cfg.data.partition!r} need task 'gcn'"
        )


def _check_secagg(cfg: RunConfig) -> None:
    """Secure aggregation hides each update, so nothing may need to look inside one."""
    if cfg.secagg.mode == "off":
        if cfg.faults.crash_stage != "train":
            raise ConfigError(
                f"faults.crash-stage = {cfg.faults.crash_stage!r} needs secure aggregation "
                f"(secagg.mode = 'full' or 'sparse')"
            )
        return
    from privacy.secagg.floor import floor_violations
    from privacy.secagg.quantize import (
        OverflowConfigError,
        PrecisionConfigError,
        fixed_point,
        input_bound,
    )

    try:  # the largest cohort is every client
        fixed_point(cfg.data.num_clients, input_bound(cfg.secagg.bound), cfg.secagg.frac_bits)
    except (OverflowConfigError, PrecisionConfigError) as err:
        raise ConfigError(str(err)) from None
    cohort = cfg.planned_cohort
    degree = None if cfg.secagg.mode == "full" else cfg.secagg.degree
    below = floor_violations(cfg.secagg.threshold, cohort, degree, cfg.secagg.insecure_demo)
    if below:
        raise ConfigError(
            "secure aggregation below its security floor: " + "; ".join(below) + " (set "
            "secagg.insecure-demo = true for a demonstration in simulation)"
        )
    if cfg.strategy.name in NEEDS_INDIVIDUAL_UPDATES:
        raise ConfigError(
            f"strategy {cfg.strategy.name!r} needs each client's update, which secure "
            f"aggregation hides; use a FedAvg-family strategy or secagg.mode = 'off'"
        )
    p = cfg.privacy
    if p.dp == "distributed" and p.adaptive:
        raise ConfigError("privacy.dp = 'distributed' supports a fixed clip norm only")
    if p.dp == "client" and (p.clipping != "client" or p.adaptive):
        raise ConfigError(
            "client-level DP with secure aggregation needs privacy.clipping = 'client' and a "
            "fixed clip norm (the server cannot clip, or count clipped updates, inside the sum)"
        )


def _check_privacy(p: PrivacyConfig) -> None:
    """Privacy is never weakened silently: a DP run must say how much noise and clipping, and
    DP settings in a run with ``dp = "off"`` are a mistake, not a no-op."""
    if p.dp == "off":
        set_keys = [
            k
            for k, v in (
                ("noise-multiplier", p.noise_multiplier),
                ("clip-norm", p.clip_norm),
                ("target-epsilon", p.target_epsilon),
            )
            if v > 0
        ]
        if set_keys:
            raise ConfigError(
                f"privacy.{set_keys[0]} is set but privacy.dp = 'off'; set "
                f"privacy.dp to 'sample', 'client' or 'local', or remove the setting"
            )
        return
    if p.dp not in ("client", "distributed") and (p.adaptive or p.clipping != "server"):
        key = "adaptive" if p.adaptive else "clipping"
        raise ConfigError(
            f"privacy.{key} applies to client-level DP only; set privacy.dp = 'client' "
            f"or remove it (privacy.dp is {p.dp!r})"
        )
    if p.clip_norm <= 0:
        raise ConfigError(f"privacy.dp = {p.dp!r} needs privacy.clip-norm > 0")
    if p.noise_multiplier <= 0 and p.target_epsilon <= 0:
        raise ConfigError(
            f"privacy.dp = {p.dp!r} needs noise: set privacy.noise-multiplier "
            f"> 0 or privacy.target-epsilon > 0 (noise 0 would give no privacy)"
        )
    if p.noise_multiplier > 0 and p.target_epsilon > 0:
        raise ConfigError("set privacy.noise-multiplier or privacy.target-epsilon, not both")


def _check_client_evaluation(cfg: RunConfig) -> None:
    """A DP client's evaluation reply (its test-set size, loss and accuracy, un-noised) is
    covered by no DP mechanism, so under DP clients do not evaluate unless an experiment
    asks for it explicitly."""
    if cfg.privacy.dp != "off" and cfg.evaluate.fraction > 0 and not cfg.privacy.clear_evaluation:
        raise ConfigError(
            f"evaluate.fraction = {cfg.evaluate.fraction:g} with privacy.dp = "
            f"{cfg.privacy.dp!r}: client evaluation replies carry each client's test-set size "
            f"and un-noised loss and accuracy, which no DP mechanism covers; set "
            f"evaluate.fraction = 0 (evaluate.server still tests the model on held-out data), "
            f"or in a simulation privacy.clear-evaluation = true to measure it anyway"
        )
    if cfg.privacy.clear_evaluation and cfg.privacy.dp == "off":
        raise ConfigError("privacy.clear-evaluation applies under DP only (privacy.dp is 'off')")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` from the command line; the value is read as TOML if it can be."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a scenario TOML file and apply overrides."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"scenario file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"scenario file {path} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"scenario file {path} is not valid TOML: {err}") from None
    return parse_config(raw, overrides)


def _flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict with TOML-style keys (for the resolved config written to the run dir)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[_key(f.name)] = (
            to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
        )
    return out


def to_run_config(cfg: RunConfig) -> dict[str, bool | int | float | str]:
    """Flat scalar dict for Flower's run config (lists become comma-separated strings)."""
    return {
        k: ",".join(map(str, v)) if isinstance(v, list) else v
        for k, v in _flatten(to_dict(cfg)).items()
    }


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as a scenario file that reproduces the run."""
    top, tables = [], []
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            tables.append(
                f"\n[{k}]\n" + "".join(f"{kk} = {_toml_value(vv)}\n" for kk, vv in v.items())
            )
        else:
            top.append(f"{k} = {_toml_value(v)}\n")
    return "".join(top) + "".join(tables)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes; TOML also forbids raw DEL.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def describe() -> list[tuple[str, str, str]]:
    """(key, default, description) for every setting: the configuration reference."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, prefix + _key(f.name) + ".")
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                choices = f.metadata.get("choices")
                extra = f", or {f.metadata['or'][1]}" if f.metadata.get("or") else ""
                doc = f.metadata["doc"] + (
                    f" (one of: {', '.join(choices)}{extra})" if choices else ""
                )
                rows.append(
                    (
                        prefix + _key(f.name),
                        _toml_value(list(default) if isinstance(default, tuple) else default),
                        doc,
                    )
                )

    walk(RunConfig, "")
    return rows


def reference_table() -> str:
    """The configuration reference as a Markdown table (the README's, kept in step by a test)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {doc} |" for key, default, doc in describe()]
    return "\n".join(lines)
