"""Settings that are valid alone but not together: checked once, after parsing."""

from __future__ import annotations

import itertools
import math

from fedcore.config.schema import (
    NEEDS_INDIVIDUAL_UPDATES,
    CompressionConfig,
    ConfigError,
    DataConfig,
    PrivacyConfig,
    RunConfig,
    StrategyConfig,
)
from fedcore.datasets import input_width
from fedcore.datasets.femnist import WRITERS


def _check_combination(cfg: RunConfig) -> None:
    """Settings that are valid alone but not together."""
    if cfg.train.target_accuracy > 0 and not cfg.evaluate.server:
        raise ConfigError(
            "train.target-accuracy needs evaluate.server = true (it reads the "
            "server's test accuracy)"
        )
    _check_privacy(cfg.privacy)
    _check_secagg(cfg)
    _check_sample_distributed(cfg)
    if cfg.privacy.dp == "distributed" and cfg.secagg.mode == "off":
        raise ConfigError(
            "privacy.dp = 'distributed' needs secure aggregation (secagg.mode = 'full' or "
            "'sparse'): each client's share of the noise is too small to protect it alone"
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
    _check_cohorts(cfg)
    _check_model_size(cfg)
    if cfg.data.partition == "natural" and cfg.data.dataset not in ("femnist", "ml-100k", "files"):
        raise ConfigError(
            f"data.partition = 'natural' needs a dataset with natural clients "
            f"(femnist, ml-100k, or files with client ids), not {cfg.data.dataset!r}"
        )
    _check_client_evaluation(cfg)
    noised_sum = cfg.privacy.dp in ("client", "distributed")
    individual = individual_updates(cfg.strategy)
    if noised_sum and individual is not None:
        raise ConfigError(
            f"{individual} needs each client's update, but privacy.dp = "
            f"{cfg.privacy.dp!r} noises only their sum; use strategy 'fedavg' (or a server "
            f"optimizer) or privacy.dp = 'local'"
        )
    _check_defence(cfg)
    _check_attack(cfg)
    _check_compression(cfg)
    e = cfg.engine
    _only_with(
        "engine.name = 'ray'",
        e.name == "ray",
        [("engine.address", e.address, ""), ("engine.gpus", e.gpus, 0.0)],
    )
    _check_device(cfg)


def _check_device(cfg: RunConfig) -> None:
    """A device other than the CPU, where its code path is known to hold."""
    e = cfg.engine
    if e.device == "cpu":
        return
    if cfg.task != "mlp":
        raise ConfigError(
            f"engine.device = {e.device!r} is for task 'mlp' (its training moves every "
            f"tensor it uses); task {cfg.task!r} trains on the CPU"
        )
    if cfg.privacy.dp in ("sample", "sample-distributed"):
        raise ConfigError(
            f"engine.device = {e.device!r} does not apply to DP-SGD (privacy.dp = "
            f"{cfg.privacy.dp!r}): its noise is drawn on the CPU"
        )
    if e.name == "ray" and e.device == "cuda" and e.gpus == 0:
        raise ConfigError(
            "engine.device = 'cuda' on the ray engine needs engine.gpus > 0: Ray hides "
            "every GPU from an actor that holds none"
        )


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


# A Poisson round whose cohort is non-empty but below what secure aggregation can sum
# aborts; refused above one round in 20 (an empty round is harmless: it is recorded "empty").
MAX_SMALL_COHORT_CHANCE = 0.05
# The largest model the built-in tasks build: 2^28 parameters, 1 GiB in float32, which the
# server holds several float64 copies of (state, sum, a wire vector per reply); a width
# beyond it is a typo, found before torch tries to allocate it.
MAX_MODEL_PARAMETERS = 2**28


def _check_cohorts(cfg: RunConfig) -> None:
    """Cohorts that could only fail at run time: a minimum no run can reach (it waited for
    nodes that never come), Krum's assumption beyond its cohort, Poisson cohorts too small
    to sum securely, and FEMNIST writers merged into fewer clients."""
    d, t, s = cfg.data, cfg.train, cfg.strategy
    if t.min_clients > d.num_clients:
        raise ConfigError(
            f"train.min-clients = {t.min_clients} exceeds data.num-clients = {d.num_clients}: "
            "no round could sample that many clients"
        )
    if s.name == "krum" and s.num_malicious > 0 and cfg.planned_cohort < 2 * s.num_malicious + 3:
        raise ConfigError(
            f"krum with strategy.num-malicious = {s.num_malicious} needs a cohort of at least "
            f"2 f + 3 = {2 * s.num_malicious + 3} clients (Blanchard et al. 2017), not a cohort "
            f"of {cfg.planned_cohort:g}; lower num-malicious or sample more clients"
        )
    if cfg.secagg.mode != "off" and t.sampling == "poisson":
        least = _least_secure_cohort(cfg)
        chance = _small_cohort_chance(d.num_clients, t.fraction, least)
        if chance > MAX_SMALL_COHORT_CHANCE:
            raise ConfigError(
                f"train.sampling = 'poisson' at rate {t.fraction:g} of {d.num_clients} clients "
                f"samples 1 to {least - 1} clients in {chance:.1%} of rounds, fewer than secure "
                f"aggregation can sum (those rounds abort); raise train.fraction or "
                f"data.num-clients, or use train.sampling = 'fixed-size'"
            )
    if d.dataset == "femnist" and d.partition == "natural" and d.num_clients != WRITERS:
        raise ConfigError(
            f"data.partition = 'natural' on femnist is one client per writer: its {WRITERS} "
            f"writers need data.num-clients = {WRITERS}, not data.num-clients = {d.num_clients} "
            "(fewer would merge writers into one client; more would leave clients empty)"
        )


def _least_secure_cohort(cfg: RunConfig) -> int:
    """The fewest clients secure aggregation sums under ``cfg``'s floor (two in a demo)."""
    from privacy.secagg.floor import floor_violations

    if cfg.secagg.insecure_demo:
        return 2
    degree = None if cfg.secagg.mode == "full" else cfg.secagg.degree
    # (past a few dozen clients only settings the floor refuses at any size fail it, and
    # _check_secagg has refused those: the bound keeps a huge num-clients from looping)
    for n in range(1, min(cfg.data.num_clients, 100) + 1):
        if not floor_violations(cfg.secagg.threshold, n, degree, False):
            return n
    return cfg.data.num_clients + 1


def _small_cohort_chance(clients: int, rate: float, least: int) -> float:
    """P(1 <= X < least) for X ~ Binomial(clients, rate): a Poisson cohort that is not empty
    but smaller than ``least``."""
    return sum(
        math.comb(clients, k) * rate**k * (1 - rate) ** (clients - k)
        for k in range(1, min(least, clients + 1))
    )


def _check_model_size(cfg: RunConfig) -> None:
    """Refuse ``model.hidden`` widths whose model would exceed :data:`MAX_MODEL_PARAMETERS`
    (the widths chained from the dataset's features to at least one output, biases
    included): torch would otherwise try to allocate it, and fail with no reason given."""
    hidden = getattr(dict(cfg.sections).get("model"), "hidden", None)
    if not hidden:
        return
    widths = (input_width(cfg.data.dataset), *hidden, 1)
    parameters = sum(a * b + b for a, b in itertools.pairwise(widths))
    if parameters > MAX_MODEL_PARAMETERS:
        raise ConfigError(
            f"model.hidden = {list(hidden)} makes a model of at least {parameters:.3g} "
            f"parameters ({parameters * 4 / 2**30:.3g} GiB in float32), more than the "
            f"{MAX_MODEL_PARAMETERS:.3g} fedcore builds; use smaller widths"
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
        quantized_frac_bits,
    )

    bound = input_bound(cfg.secagg.bound)
    frac_bits, smallest = cfg.secagg.frac_bits, 32
    if cfg.compression.uplink == "qsgd":  # (privacy.secagg.encoding.encoding_bits)
        frac_bits, smallest = quantized_frac_bits(bound, cfg.compression.bits), 16
    try:  # the largest cohort is every client
        fixed_point(cfg.data.num_clients, bound, frac_bits, smallest)
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
    if individual_updates(cfg.strategy) is not None:
        raise ConfigError(
            f"{individual_updates(cfg.strategy)} needs each client's update, which secure "
            f"aggregation hides; use a FedAvg-family strategy or secagg.mode = 'off' (what "
            f"composes with it: client-level DP's client-side clipping, whose secure sum "
            f"the server checks against n x privacy.clip-norm)"
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
        ] + (["mechanism"] if p.mechanism != "gaussian" else [])
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
    if p.mechanism != "gaussian" and p.dp != "record":
        raise ConfigError(
            f"privacy.mechanism = {p.mechanism!r} applies to privacy.dp = 'record' only "
            f"(privacy.dp is {p.dp!r}, whose mechanism is the Gaussian)"
        )
    if p.dp == "record":
        if p.clip_norm > 0:
            raise ConfigError(
                "privacy.clip-norm does not apply to privacy.dp = 'record': the algorithm "
                "bounds what one record changes (its sensitivity); remove it"
            )
    elif p.clip_norm <= 0:
        raise ConfigError(f"privacy.dp = {p.dp!r} needs privacy.clip-norm > 0")
    if p.noise_multiplier <= 0 and p.target_epsilon <= 0:
        raise ConfigError(
            f"privacy.dp = {p.dp!r} needs noise: set privacy.noise-multiplier "
            f"> 0 or privacy.target-epsilon > 0 (noise 0 would give no privacy)"
        )
    if p.noise_multiplier > 0 and p.target_epsilon > 0:
        raise ConfigError("set privacy.noise-multiplier or privacy.target-epsilon, not both")


def _check_client_evaluation(cfg: RunConfig) -> None:
    """``privacy.clear-evaluation`` is an exception to DP's rule on client evaluation, which
    the algorithm's rules apply (:func:`fedcore.tasks.algorithm.check_algorithm_config`: only
    an algorithm that evaluates on clients sends them evaluation messages)."""
    if cfg.privacy.clear_evaluation and cfg.privacy.dp == "off":
        raise ConfigError("privacy.clear-evaluation applies under DP only (privacy.dp is 'off')")


def individual_updates(s: StrategyConfig) -> str | None:
    """The setting of ``s`` that needs each client's update (a robust rule, server-side
    clipping of each update, a pre-aggregation), or None if the sum is enough."""
    if s.name in NEEDS_INDIVIDUAL_UPDATES:
        return f"strategy {s.name!r}"
    if s.server_clip_norm > 0:
        return "strategy.server-clip-norm"
    if s.pre_aggregation != "none":
        return f"strategy.pre-aggregation = {s.pre_aggregation!r}"
    return None


def _only_with(owner: str, active: bool, keys: list[tuple[str, object, object]]) -> None:
    """ConfigError for the first of ``keys`` (name, value, default) set away from its
    default while ``owner`` is not in use: a setting that would be silently ignored."""
    if active:
        return
    for key, value, default in keys:
        if value != default:
            raise ConfigError(f"{key} applies only with {owner}; remove it or set {owner}")


def _check_defence(cfg: RunConfig) -> None:
    """A defence's parameters go with it, and its assumptions on the cohort hold."""
    s, d = cfg.strategy, StrategyConfig()
    _only_with(
        "strategy.name = 'multikrum'",
        s.name == "multikrum",
        [("strategy.krum-select", s.krum_select, d.krum_select)],
    )
    _only_with(
        "strategy.name = 'centered-clipping'",
        s.name == "centered-clipping",
        [
            ("strategy.cc-radius", s.cc_radius, d.cc_radius),
            ("strategy.cc-iterations", s.cc_iterations, d.cc_iterations),
        ],
    )
    _only_with(
        "strategy.pre-aggregation = 'bucketing'",
        s.pre_aggregation == "bucketing",
        [("strategy.bucket-size", s.bucket_size, d.bucket_size)],
    )
    if cfg.train.sampling != "fixed-size":
        return  # a Poisson cohort's size is known only at the round; Bulyan skips it then
    cohort = int(cfg.planned_cohort)
    if s.pre_aggregation == "bucketing":
        cohort = math.ceil(cohort / s.bucket_size)
    f = s.num_malicious
    if s.name == "bulyan" and f > 0 and cohort < 4 * f + 3:  # (f = 0: as Krum's rule)
        raise ConfigError(
            f"strategy 'bulyan' needs at least 4 f + 3 = {4 * f + 3} clients (or buckets) per "
            f"round for strategy.num-malicious = {f}; the round has {cohort}"
        )
    if s.name == "multikrum" and f > 0 and cohort < 2 * f + 3:
        raise ConfigError(
            f"multikrum with strategy.num-malicious = {f} needs at least 2 f + 3 = {2 * f + 3} "
            f"clients (or buckets) per round (Blanchard et al. 2017); the round has {cohort}"
        )
    if s.name == "multikrum" and s.krum_select > cohort:
        raise ConfigError(
            f"strategy.krum-select = {s.krum_select} is more than the {cohort} clients "
            "(or buckets) of a round"
        )
    if s.pre_aggregation == "nnm" and f >= cfg.planned_cohort:
        raise ConfigError(
            f"strategy.pre-aggregation = 'nnm' mixes each update with its n - f nearest; "
            f"strategy.num-malicious = {f} leaves none of the {int(cfg.planned_cohort)}"
        )


def _check_attack(cfg: RunConfig) -> None:
    """A simulated attack names its malicious clients, replaces plain replies only, and its
    parameters go with it."""
    a = cfg.attack
    if (a.name == "none") != (a.num_malicious == 0):
        raise ConfigError(
            "attack.name and attack.num-malicious go together: set both (an attack and at "
            f"least one malicious client) or neither (attack.name = {a.name!r}, "
            f"attack.num-malicious = {a.num_malicious})"
        )
    if a.name == "none":
        return
    if a.num_malicious > cfg.data.num_clients:
        raise ConfigError(
            f"attack.num-malicious = {a.num_malicious} is more than data.num-clients = "
            f"{cfg.data.num_clients}"
        )
    if cfg.secagg.mode != "off" or cfg.privacy.dp != "off":
        raise ConfigError(
            "a simulated attack replaces a client's plain reply; it runs with "
            "secagg.mode = 'off' and privacy.dp = 'off'"
        )
    majority = math.floor(cfg.planned_cohort / 2 + 1)
    if a.name == "alie" and a.alie_z == 0 and a.num_malicious >= majority:
        raise ConfigError(
            f"attack 'alie' with {a.num_malicious} malicious clients of a cohort of "
            f"{cfg.planned_cohort:g} already holds a majority: Baruch et al.'s z_max is "
            "undefined; set attack.alie-z"
        )
    d = type(a)()
    for attack, key, value, default in (
        ("scale", "attack.scale", a.scale, d.scale),
        ("gaussian", "attack.noise-std", a.noise_std, d.noise_std),
        ("ipm", "attack.ipm-epsilon", a.ipm_epsilon, d.ipm_epsilon),
        ("alie", "attack.alie-z", a.alie_z, d.alie_z),
    ):
        _only_with(f"attack.name = {attack!r}", a.name == attack, [(key, value, default)])


def _check_compression(cfg: RunConfig) -> None:
    """A compressor's parameters go with it, and it composes with the rest of the run."""
    c, d = cfg.compression, CompressionConfig()
    _only_with(
        "compression.uplink = 'qsgd'", c.uplink == "qsgd", [("compression.bits", c.bits, d.bits)]
    )
    _only_with(
        "compression.uplink = 'topk' or 'randk'",
        c.uplink in ("topk", "randk"),
        [("compression.fraction", c.fraction, d.fraction)],
    )
    _only_with(
        "compression.uplink = 'qsgd' or 'sign', or compression.downlink = 'qsgd'",
        c.uplink in ("qsgd", "sign") or c.downlink == "qsgd",
        [("compression.block", c.block, d.block)],
    )
    _only_with(
        "a compression.uplink",
        c.uplink != "none",
        [("compression.error-feedback", c.error_feedback, d.error_feedback)],
    )
    _only_with(
        "compression.downlink = 'qsgd'",
        c.downlink == "qsgd",
        [("compression.downlink-bits", c.downlink_bits, d.downlink_bits)],
    )
    if cfg.attack.name != "none" and (c.uplink != "none" or c.downlink != "none"):
        raise ConfigError(
            "a simulated attack reads and replaces uncompressed messages; run it with "
            "compression.uplink = 'none' and compression.downlink = 'none'"
        )
    if c.uplink == "none" or cfg.secagg.mode == "off":
        return
    if c.uplink != "qsgd":
        raise ConfigError(
            f"compression.uplink = {c.uplink!r} with secure aggregation: the masked sum needs "
            "every client's entries on one support, and a client's own choice of entries (or "
            "signs with its own scale) would not add up; use compression.uplink = 'qsgd', "
            "whose levels secure aggregation masks directly"
        )
    if cfg.privacy.dp != "local":
        raise ConfigError(
            "compression.uplink = 'qsgd' with secure aggregation quantizes every masked entry "
            f"to compression.bits = {c.bits} bits: FedAvg's example counts need more (without "
            "DP), and under central or distributed DP each client's rounding error (up to "
            "one level a weight) would add to the sensitivity the server's noise is sized for "
            "(conditional rounding is not built); it composes with privacy.dp = 'local', "
            "whose noise comes before the rounding (post-processing)"
        )
    if c.block != d.block or c.error_feedback:
        raise ConfigError(
            "compression.uplink = 'qsgd' with secure aggregation is the secure sum's own "
            "fixed-point encoding at compression.bits bits: one public scale for every "
            "client (no compression.block) and unbiased stochastic rounding by the masking "
            "mod, with no residual to feed back: set compression.error-feedback = false"
        )
