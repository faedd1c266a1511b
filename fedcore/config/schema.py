"""The settings: frozen dataclasses whose fields carry their validation rules and docs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fedcore.config.fields import ConfigError, option
from fedcore.config.sections import BUILTIN_TASKS, sections_of
from fedcore.datasets import DATASETS, NETWORKS, REGRESSION_DATASETS
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
    "multikrum",
    "bulyan",
    "centered-clipping",
)
# Strategies whose server math needs each client's update, not only the (noised or masked) sum.
NEEDS_INDIVIDUAL_UPDATES = frozenset(
    {"fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "centered-clipping"}
)
# Simulated attacks of malicious clients (simulations/attacks.py).
ATTACKS = ("none", "sign-flip", "gaussian", "label-flip", "scale", "alie", "ipm", "minmax")
# privacy.dp modes whose unit of privacy is a client's whole data (not one example).
CLIENT_LEVEL_DP = frozenset({"client", "distributed", "local"})
ENGINES = ("inprocess", "ray")
UPLINK_COMPRESSORS = ("none", "qsgd", "topk", "randk", "sign")
TASKS = tuple(BUILTIN_TASKS)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = option(
        "digits",
        choices=(*DATASETS, "files", *GRAPH_DATASETS, "ml-100k", *NETWORKS, *REGRESSION_DATASETS),
        doc="dataset of the task (graphs: gcn; ratings: mf; networks: bayesnet; regression: "
        "linear); files: your own, data.train-file",
    )
    train_file: str = option(
        "",
        doc="dataset files: NPZ (x, y, client), CSV (header; label and client columns) or "
        "'samples,labels' IDX; a path may end in #sha256=<hex> to pin it",
    )
    test_file: str = option(
        "", doc="dataset files: the server's test set, as train-file; empty: hold out part"
    )
    test_fraction: float = option(
        0.2, gt=0, le=0.9, doc="dataset files, no test-file: share of train-file held out"
    )
    label_column: str = option("label", doc="dataset files, CSV: the label column")
    client_column: str = option(
        "", doc="dataset files: the CSV column giving each sample's natural client (optional)"
    )
    split: str = option(
        "u1",
        choices=("u1", "u2", "u3", "u4", "u5", "ua", "ub"),
        doc="ml-100k: the official train/test split",
    )
    num_clients: int = option(10, ge=1, doc="number of clients (partitions)")
    partition: str = option(
        "dirichlet",
        choices=tuple(dict.fromkeys(PARTITIONERS + GRAPH_PARTITIONERS)),
        doc="how data is split (graphs: louvain, dirichlet or iid over nodes)",
    )
    alpha: float = option(0.5, gt=0, doc="Dirichlet concentration (dirichlet, quantity)")
    shards_per_client: int = option(2, ge=1, doc="label shards per client (shards)")
    min_size: int = option(2, ge=1, doc="minimum samples per client (dirichlet, quantity)")
    local_test_fraction: float = option(
        0.2, ge=0, le=0.9, doc="share of each client's data kept for client-side evaluation"
    )
    data_dir: str = option("", doc="data folder; empty: $FEDCORE_DATA, ../shared/data, cache")
    download: bool = option(False, doc="download a missing dataset from its original source")


@dataclass(frozen=True)
class TrainConfig:
    rounds: int = option(20, ge=1, doc="federated rounds")
    local_epochs: int = option(3, ge=1, doc="local epochs per round")
    batch_size: int = option(16, ge=1, doc="local mini-batch size")
    lr: float = option(0.05, gt=0, doc="client learning rate (SGD)")
    momentum: float = option(0.9, ge=0, le=1, doc="client SGD momentum")
    weight_decay: float = option(0.0, ge=0, doc="client L2 weight decay")
    fraction: float = option(1.0, gt=0, le=1, doc="fraction of clients sampled per round")
    min_clients: int = option(1, ge=1, doc="minimum clients per round (fixed-size sampling)")
    sampling: str = option(
        "fixed-size",
        choices=("fixed-size", "poisson"),
        doc="client sampling: a fixed-size cohort without replacement, or each client "
        "independently with probability fraction (Poisson, what DP amplification assumes)",
    )
    target_accuracy: float = option(
        0.0, ge=0, le=1, doc="stop once the server test accuracy reaches this (0: never)"
    )
    # 5: a healthy cohort of k clients failing independently at rate p aborts a round with
    # probability p^k, five in a row p^(5k) (about 1e-6 for k = 3 at p = 0.4); a
    # systematic failure (a crashing client, an unreachable secure-aggregation threshold)
    # aborts every round and stops after five instead of spending the whole run.
    # A round that sampled nobody (Poisson sampling) is not a failure and is not counted.
    max_failed_rounds: int = option(
        5,
        ge=0,
        doc="the run fails after this many rounds in a row that sampled clients but "
        "aggregated no update (0: only if no round aggregated one)",
    )
    checkpoint_every: int = option(
        1,
        ge=0,
        doc="write the run directory's checkpoint.bin every this many rounds, for "
        "`fedcore simulate --resume` (0: never)",
    )
    resume_from: str = option(
        "",
        doc="a deployed run: the run directory, on the server, whose checkpoint this run "
        "continues (`fedcore deploy-local --resume` sets it; simulations use "
        "`fedcore simulate --resume`)",
    )


@dataclass(frozen=True)
class EvaluateConfig:
    fraction: float = option(1.0, ge=0, le=1, doc="fraction of clients evaluating per round")
    server: bool = option(True, doc="evaluate the global model on the held-out test set")


@dataclass(frozen=True)
class StrategyConfig:
    name: str = option("fedavg", choices=STRATEGIES, doc="server strategy")
    proximal_mu: float = option(0.01, ge=0, doc="FedProx proximal weight")
    server_lr: float = option(
        1.0, gt=0, doc="server learning rate (fedavgm; the mf task's per-item FedAvg)"
    )
    eta: float = option(0.01, gt=0, doc="FedAdam/FedYogi/FedAdagrad server learning rate")
    server_momentum: float = option(0.9, ge=0, le=1, doc="FedAvgM server momentum")
    beta_1: float = option(0.9, ge=0, le=1, doc="FedAdam/FedYogi first-moment decay")
    beta_2: float = option(0.99, ge=0, le=1, doc="FedAdam/FedYogi second-moment decay")
    tau: float = option(1e-3, gt=0, doc="FedOpt adaptivity")
    trim_beta: float = option(0.2, ge=0, le=0.49, doc="FedTrimmedAvg fraction cut at each end")
    num_malicious: int = option(
        0, ge=0, doc="Krum, multi-Krum, Bulyan, NNM: assumed number f of malicious clients"
    )
    krum_select: int = option(
        0, ge=0, doc="multikrum: clients of least Krum score averaged; 0: n - f"
    )
    cc_radius: float = option(1.0, gt=0, doc="centered-clipping: the clipping radius tau")
    cc_iterations: int = option(1, ge=1, doc="centered-clipping: iterations per round")
    pre_aggregation: str = option(
        "none",
        choices=("none", "bucketing", "nnm"),
        doc="before the robust rule (or the mean): bucketing (means of seeded random buckets, "
        "Karimireddy et al. 2022) or nnm (each update the mean of its n - f nearest, "
        "Allouah et al. 2023)",
    )
    bucket_size: int = option(2, ge=1, doc="bucketing: clients per bucket")
    server_clip_norm: float = option(
        0.0,
        ge=0,
        doc="the server clips each client's update to this L2 norm before aggregating "
        "(without secure aggregation); 0: no clipping",
    )


@dataclass(frozen=True)
class EngineConfig:
    name: str = option("inprocess", choices=ENGINES, doc="execution engine")
    workers: int = option(1, ge=1, doc="worker processes (inprocess) / concurrent actors (ray)")
    threads: int = option(1, ge=1, doc="torch threads per worker")
    timeout: float = option(
        0.0,
        ge=0,
        doc="seconds each exchange of a round waits for replies (deployed runs: a node that "
        "dies never replies); 0: no limit",
    )
    poll_interval: float = option(
        0.1,
        ge=0,
        le=10,
        doc="deployed runs: seconds between the server's checks for replies; 0: Flower's "
        "own send_and_receive (every 3 s)",
    )
    address: str = option(
        "",
        doc="ray engine: a running Ray cluster to run the clients on (its head, "
        "HOST:PORT, or 'auto'); empty: a private Ray on this machine",
    )
    gpus: float = option(
        0.0, ge=0, doc="ray engine: GPUs each client actor holds (0.5: two share a GPU)"
    )
    device: str = option(
        "cpu",
        choices=("cpu", "cuda", "auto"),
        doc="where clients train (task mlp, without DP-SGD): cpu, cuda, or auto (cuda where "
        "torch sees one); each process keeps one model and its clients' data there",
    )


@dataclass(frozen=True)
class FaultConfig:
    client_failure_rate: float = option(
        0.0, ge=0, le=1, doc="simulation only: chance that a sampled client crashes in a round"
    )
    crash_stage: str = option(
        "train",
        choices=("train", "share-keys", "masked-input", "unmask"),
        doc="the message at which a failing client crashes (stages after train: secure "
        "aggregation only)",
    )


@dataclass(frozen=True)
class AttackConfig:
    name: str = option(
        "none",
        choices=ATTACKS,
        doc="simulation only: what the malicious clients send (sign-flip, gaussian, "
        "label-flip, scale; colluding: alie, ipm, minmax)",
    )
    num_malicious: int = option(
        0, ge=0, doc="simulation only: malicious clients, drawn from the run seed"
    )
    scale: float = option(10.0, gt=0, doc="scale: factor on the honest update")
    noise_std: float = option(10.0, gt=0, doc="gaussian: std of the noise added to the update")
    ipm_epsilon: float = option(
        0.1, gt=0, doc="ipm: the colluders send -epsilon times their benign mean"
    )
    alie_z: float = option(
        0.0, ge=0, doc="alie: the colluders send mean - z std; 0: Baruch et al.'s z_max"
    )


@dataclass(frozen=True)
class SecAggConfig:
    mode: str = option(
        "off",
        choices=("off", "full", "sparse"),
        doc="secure aggregation: off; full (every pair of clients masks, Bonawitz et al. "
        "2017); sparse (SecAgg+: O(log n) neighbours each, Bell et al. 2020)",
    )
    threshold: float = option(
        0.5,
        gt=0,
        le=0.95,
        doc="a client's secrets need more than this fraction of its holders (it and its "
        "neighbours); at least 0.5 unless insecure-demo",
    )
    degree: int = option(
        0,
        ge=0,
        doc="sparse: neighbours per client, at least 4 unless insecure-demo; 0: 2 ceil(log2 n) + 2",
    )
    bound: float = option(1.0, gt=0, doc="each update coordinate is clipped to [-bound, bound]")
    frac_bits: int = option(20, ge=1, le=40, doc="fixed-point fraction bits of the encoding")
    max_weight: float = option(
        10000.0,
        gt=0,
        doc="public bound on a client's weight (num-examples; mf: also its rater count per "
        "item); clients send weight / max-weight",
    )
    clear_metrics: bool = option(
        True,
        doc="send the training metrics (loss, time, number of examples; under DP only the "
        "client's epsilon) in the clear beside the masked update; false: none (the weight "
        "still reaches the server masked, in the sum)",
    )
    insecure_demo: bool = option(
        False,
        doc="simulation only: lift the security floor (threshold >= 0.5, cohort >= 3, degree "
        ">= 4, t + 1 surviving holders); refused by deployed runs",
    )


@dataclass(frozen=True)
class CompressionConfig:
    uplink: str = option(
        "none",
        choices=UPLINK_COMPRESSORS,
        doc="compress each client's update (after its DP noise): none; qsgd (stochastic "
        "b-bit quantization, unbiased; Alistarh et al. 2017); topk / randk (send a fraction "
        "of the entries: the largest / random ones); sign (scaled signs, 1 bit per entry; "
        "Karimireddy et al. 2019)",
    )
    bits: int = option(8, ge=1, le=16, doc="qsgd: bits per entry, its sign included")
    block: int = option(
        0, ge=0, doc="qsgd, sign: entries that share one scale; 0: one scale per update"
    )
    fraction: float = option(0.01, gt=0, le=1, doc="topk, randk: the fraction of entries sent")
    error_feedback: bool = option(
        True,
        doc="add what compression left out of an update to the node's next one (Stich et al. "
        "2018); the residual stays in the node's state",
    )
    downlink: str = option(
        "none",
        choices=("none", "qsgd"),
        doc="compress the global model sent to the clients: none, or qsgd (stochastic "
        "quantization, downlink-bits per entry, one scale per block); clients train from it",
    )
    downlink_bits: int = option(8, ge=2, le=16, doc="downlink = qsgd: bits per entry")


@dataclass(frozen=True)
class PrivacyConfig:
    dp: str = option(
        "off",
        choices=("off", "sample", "sample-distributed", "client", "local", "distributed", "record"),
        doc="differential privacy: off; sample (DP-SGD on clients, one example protected); "
        "sample-distributed (one DP-SGD step per round whose noise the clients share under "
        "secure aggregation, so the sum is a step of central DP-SGD); client (DP-FedAvg, one "
        "client protected, noise added by the server); local (each client clips and noises "
        "its update before sending it); distributed (client-level, each client adds its "
        "share of the noise under secure aggregation); record (one record of a count table "
        "or a point protected: the server noises the sums by the algorithm's sensitivity; "
        "kmeans, bayesnet)",
    )
    mechanism: str = option(
        "gaussian",
        choices=("gaussian", "laplace", "discrete-gaussian"),
        doc="privacy.dp = record: Gaussian noise scaled to a record's L2 sensitivity, Laplace "
        "noise to its L1 sensitivity (pure DP), or discrete Gaussian (integer) noise to its "
        "L2 sensitivity, for statistics that are all counts (zCDP; bayesnet)",
    )
    noise_multiplier: float = option(
        0.0, ge=0, doc="noise std / clip norm; 0: calibrate to target-epsilon"
    )
    clip_norm: float = option(
        0.0, ge=0, doc="clip norm (required with dp): per example (sample) or per update"
    )
    target_epsilon: float = option(
        0.0, ge=0, doc="calibrate the noise so the planned run spends this epsilon"
    )
    delta: float = option(1e-5, gt=0, le=0.1, doc="delta of the (epsilon, delta) guarantee")
    sample_rate: float = option(
        0.0, ge=0, le=1, doc="dp = sample: Poisson rate per step; 0: batch-size / client size"
    )
    budget_epsilon: float = option(
        0.0,
        ge=0,
        doc="a round that would take a client past this is declined by the client (sample, "
        "local) or ends the run (client); 0: no limit",
    )
    dropout_tolerance: float = option(
        0.0,
        ge=0,
        le=0.9,
        doc="sample-distributed, distributed: share of the cohort that may drop out; clients "
        "add enough noise for the rest, and a sum of fewer clients is not released",
    )
    accountant: str = option("rdp", choices=("rdp", "prv"), doc="privacy accountant")
    clipping: str = option(
        "server",
        choices=("server", "client"),
        doc="dp = client: where updates are clipped (client: each client clips its own)",
    )
    adaptive: bool = option(
        False, doc="dp = client: adapt the clip norm to a quantile (Andrew et al. 2021)"
    )
    target_quantile: float = option(
        0.5, ge=0, le=1, doc="adaptive: fraction of updates left unclipped"
    )
    clip_lr: float = option(0.2, gt=0, doc="adaptive: geometric learning rate of the clip norm")
    count_stddev: float = option(
        0.0, ge=0, doc="adaptive: noise std of the unclipped count; 0: expected cohort / 20"
    )
    calibration_quantile: float = option(
        0.9,
        gt=0,
        le=1,
        doc="target-epsilon (sample, local): calibrate for this quantile of a client's "
        "number of rounds; a client that would pass its budget (default: the target) declines",
    )
    clear_evaluation: bool = option(
        False,
        doc="simulation only: let DP clients evaluate and reply with un-noised test metrics "
        "(covered by no DP mechanism; the report says so); deployed nodes refuse it",
    )
    seeded_noise: bool = option(
        False,
        doc="experiments only: draw DP noise, and under DP the client cohorts and DP-SGD "
        "batches, from the run seed (reproducible, but anyone who knows the seed can remove "
        "the noise and recompute who was sampled, so the run has no guarantee); default: the "
        "OS CSPRNG",
    )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; the single typed source of truth."""

    task: str = option(
        "mlp",
        choices=TASKS,
        or_pattern=(
            r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
            "'package.module:NAME' (your own Task or Algorithm)",
        ),
        doc="task: data, model and local training; or an algorithm on typed statistics",
    )
    seed: int = option(0, ge=0, doc="run seed; client generators derive from it")
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    # the task's own tables (fedcore.config.sections) as (name, instance) pairs, read as
    # attributes (cfg.graph); any the task declares and this lacks is at its defaults
    sections: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        given = dict(self.sections)
        declared = sections_of(self.task)
        for name, value in given.items():
            if name not in declared:
                raise ConfigError(
                    f"task {self.task!r} has no table [{name}]; its tables: "
                    f"{', '.join(declared) or 'none'}"
                )
            if not isinstance(value, declared[name]):
                raise ConfigError(
                    f"[{name}] of task {self.task!r} must be a {declared[name].__name__}, "
                    f"got {type(value).__name__}"
                )
        full = tuple((name, given.get(name) or cls()) for name, cls in declared.items())
        object.__setattr__(self, "sections", full)

    def __getattr__(self, name: str) -> Any:
        """A table of the task's own (``cfg.graph``); only names that are not fields get here."""
        sections = dict(self.__dict__.get("sections", ()))
        if name in sections:
            return sections[name]
        raise AttributeError(
            f"RunConfig has no {name!r}: not a core section, and task "
            f"{self.__dict__.get('task')!r} declares no such table (its tables: "
            f"{', '.join(sections) or 'none'})"
        )

    def with_section(self, name: str, **changes: Any) -> RunConfig:
        """A copy with fields of the task's own table ``name`` changed."""
        sections = dict(self.sections)
        if name not in sections:
            raise ConfigError(f"task {self.task!r} has no table [{name}]")
        sections[name] = dataclasses.replace(sections[name], **changes)
        return dataclasses.replace(self, sections=tuple(sections.items()))

    @property
    def planned_cohort(self) -> float:
        """The clients a training round samples: ``max(fraction * n, min-clients)`` of the n
        (at most n) for a fixed-size cohort, ``fraction * n`` in expectation for Poisson."""
        n, t = self.data.num_clients, self.train
        if t.sampling == "poisson":
            return n * t.fraction
        return min(n, max(int(n * t.fraction), t.min_clients))
