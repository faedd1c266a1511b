"""Settings that are valid alone but not together: checked once, after parsing."""

from __future__ import annotations

from fedcore.config.schema import (
    NEEDS_INDIVIDUAL_UPDATES,
    ConfigError,
    DataConfig,
    PrivacyConfig,
    RunConfig,
)


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
    if cfg.data.partition == "natural" and cfg.data.dataset not in ("femnist", "ml-100k", "files"):
        raise ConfigError(
            f"data.partition = 'natural' needs a dataset with natural clients "
            f"(femnist, ml-100k, or files with client ids), not {cfg.data.dataset!r}"
        )
    _check_client_evaluation(cfg)
    noised_sum = cfg.privacy.dp in ("client", "distributed")
    if noised_sum and cfg.strategy.name in NEEDS_INDIVIDUAL_UPDATES:
        raise ConfigError(
            f"strategy {cfg.strategy.name!r} needs each client's update, but privacy.dp = "
            f"{cfg.privacy.dp!r} noises only their sum; use strategy 'fedavg' (or a server "
            f"optimizer) or privacy.dp = 'local'"
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
