"""The plan of client-level DP-FedAvg: what each round releases, fixed before training.

Shared by the server's DP strategy (which noises, or for distributed DP only accounts) and the
clients (which, for distributed DP, each add their share of the noise).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from fedcore.config import ConfigError, RunConfig
from privacy.accounting import calibrate_noise, epsilon, smallest_noise, would_exceed
from privacy.ledger import DpEvent, PrivacyLedger
from privacy.mechanisms import adaptive_update_noise


@dataclass(frozen=True)
class DpPlan:
    """What one round of DP-FedAvg releases, fixed before training.

    Attributes:
        noise_multiplier: effective noise / clip norm of a round (the update noise and, with
            adaptive clipping, the count noise together): what the ledger records.
        sampling: "poisson", "fixed-size" or "none" (every client, every round).
        sample_rate: the Poisson probability, or cohort / population; 1.0 with "none".
        population: the number of clients the cohort is drawn from.
        cohort_size: the expected number of clients per round (the averaging denominator).
        min_in_sum: distributed DP: the fewest surviving clients whose noise shares carry the
            whole noise; each client sizes its share for this many, and the server releases
            no sum of fewer (``privacy.dropout-tolerance`` of the cohort may drop out).
        seed: run seed.
        seeded_noise: draw the noise from the seed (reproducible, for experiments only).
    """

    noise_multiplier: float
    sampling: str
    sample_rate: float
    population: int
    cohort_size: float
    seed: int
    seeded_noise: bool = False
    min_in_sum: int = 1

    def client_noise_std(self, clip_norm: float) -> float:
        """Distributed DP: each client's share of the noise, so that a sum of ``min_in_sum``
        clients (or more) carries at least ``noise_multiplier * clip_norm``."""
        return self.noise_multiplier * clip_norm / self.min_in_sum**0.5

    def realised_noise(self, in_sum: int) -> float:
        """Distributed DP: the noise multiplier a sum of ``in_sum`` clients' shares carries."""
        return self.noise_multiplier * (in_sum / self.min_in_sum) ** 0.5

    def release_refusal(
        self,
        server_round: int,
        clip_norm: float,
        in_sum: int,
        ledger: PrivacyLedger,
        budget: tuple[float, float, str] | None,
    ) -> str | None:
        """Distributed DP: why a secure sum of ``in_sum`` clients' shares must not be
        unmasked (None: it may be). A sum of fewer clients than the shares were sized for
        carries less noise than planned; one whose realised noise would take the run past
        ``budget`` (epsilon, delta, accountant) is not released either."""
        if in_sum < self.min_in_sum:
            return (
                f"only {in_sum} masked inputs arrived; the clients' shares of the DP noise "
                f"cover a sum of at least {self.min_in_sum} (privacy.dropout-tolerance), "
                f"so this sum is not released"
            )
        if budget is None:
            return None
        limit, delta, accountant = budget
        event = self.event(server_round, clip_norm, self.realised_noise(in_sum))
        exceeds, eps = would_exceed(ledger, [event], limit, delta, accountant)
        if exceeds:
            return (
                f"privacy budget: releasing this sum of {in_sum} clients would reach epsilon "
                f"{eps:.3f} > budget {limit} (delta {delta}); not released"
            )
        return None

    def event(self, server_round: int, clip_norm: float, noise: float | None = None) -> DpEvent:
        """The round's release (``noise``: the realised noise multiplier, if not planned)."""
        return DpEvent.gaussian(
            mechanism="gaussian",
            noise_multiplier=self.noise_multiplier if noise is None else noise,
            sample_rate=self.sample_rate,
            steps=1,
            clip_norm=clip_norm,
            sampling=self.sampling,
            neighbouring="client",
            round=server_round,
            client=None,
            population=self.population if self.sampling == "fixed-size" else None,
        )


def dp_plan(cfg: RunConfig) -> DpPlan:
    """The plan for ``cfg``: cohort from ``train.fraction``/``train.sampling``, noise from
    ``privacy.noise-multiplier`` or calibrated so ``train.rounds`` rounds spend
    ``privacy.target-epsilon``."""
    n, fraction, p = cfg.data.num_clients, cfg.train.fraction, cfg.privacy
    cohort = cfg.planned_cohort
    if cfg.train.sampling == "poisson":
        sampling, rate = ("none" if fraction == 1 else "poisson"), fraction
    else:
        sampling, rate = ("none" if cohort == n else "fixed-size"), cohort / n
    rate = 1.0 if sampling == "none" else rate
    z = p.noise_multiplier or calibrate_noise(
        p.target_epsilon,
        p.delta,
        rate,
        cfg.train.rounds,
        p.accountant,
        sampling,
        "client",
        n if sampling == "fixed-size" else None,
    )
    floor = _surviving(cohort, p.dropout_tolerance)
    return DpPlan(z, sampling, rate, n, float(cohort), cfg.seed, p.seeded_noise, floor)


@functools.lru_cache(maxsize=8)  # a calibration is a bisection; asked every round
def record_noise(cfg: RunConfig) -> float:
    """Record-level DP's noise multiplier (noise scale over the algorithm's sensitivity):
    configured, or calibrated so that ``train.rounds`` releases spend
    ``privacy.target-epsilon``: the Gaussian with the accountant at ``privacy.delta``; the
    Laplace by pure composition (each release is 1 / z-DP, so z = rounds / epsilon). Every
    round is counted whole: no amplification by sampling."""
    p = cfg.privacy
    if p.noise_multiplier > 0:
        return p.noise_multiplier
    if p.mechanism == "laplace":
        return cfg.train.rounds / p.target_epsilon
    if p.mechanism == "discrete-gaussian":
        return _calibrate_discrete_gaussian(cfg)
    return calibrate_noise(
        p.target_epsilon, p.delta, 1.0, cfg.train.rounds, p.accountant, "none", "record"
    )


def _calibrate_discrete_gaussian(cfg: RunConfig) -> float:
    """The smallest noise multiplier (to 1%) whose ``train.rounds`` discrete Gaussian
    releases (``1 / (2 z^2)``-zCDP each) spend at most ``privacy.target-epsilon``."""
    p = cfg.privacy

    @functools.cache
    def spent(z: float) -> float:
        event = DpEvent.discrete_gaussian(
            "discrete-gaussian", z, cfg.train.rounds, 1.0, "record", 0, None
        )
        return epsilon([event], p.delta, p.accountant)

    return smallest_noise(spent, p.target_epsilon, p.delta)


def record_scale(cfg: RunConfig, l1: float, l2: float) -> float:
    """Record-level DP's noise scale on each summed entry, for sensitivities ``l1`` and
    ``l2`` to one record: Laplace's ``b = z l1``, else the (discrete) Gaussian's
    ``sigma = z l2``."""
    z = record_noise(cfg)
    return z * l1 if cfg.privacy.mechanism == "laplace" else z * l2


def record_noise_std(cfg: RunConfig, l1: float, l2: float) -> float:
    """The standard deviation of that noise (Laplace's is ``sqrt(2) b``)."""
    scale = record_scale(cfg, l1, l2)
    return math.sqrt(2) * scale if cfg.privacy.mechanism == "laplace" else scale


def record_event(cfg: RunConfig, z: float, l1: float, l2: float, server_round: int) -> DpEvent:
    """One record-level release of noise multiplier ``z`` on sums whose L1 and L2
    sensitivities to one record are ``l1`` and ``l2``, for the ledger."""
    if cfg.privacy.mechanism == "laplace":
        return DpEvent.laplace("laplace", z, 1, l1, "record", server_round, None)
    if cfg.privacy.mechanism == "discrete-gaussian":
        return DpEvent.discrete_gaussian(
            "discrete-gaussian", z, 1, l2, "record", server_round, None
        )
    return DpEvent.gaussian("gaussian", z, 1.0, 1, l2, "none", "record", server_round, None)


def _surviving(cohort: float, tolerance: float) -> int:
    """The fewest of ``cohort`` clients left when ``tolerance`` of them drop out."""
    return max(1, math.ceil((1 - tolerance) * cohort - 1e-9))


def min_in_sum(cfg: RunConfig) -> int:
    """Distributed DP-SGD: the fewest clients whose noise shares carry a step's whole noise.

    Every client takes part in every round (the configuration checks it); up to
    ``privacy.dropout-tolerance`` of them may drop out, and the server releases no sum of
    fewer than this many clients."""
    return _surviving(cfg.data.num_clients, cfg.privacy.dropout_tolerance)


def participation_rate(cfg: RunConfig) -> float:
    """The chance that a given client trains in a given round: ``train.fraction`` under
    Poisson sampling, cohort / population for a fixed-size cohort."""
    return cfg.planned_cohort / cfg.data.num_clients


@functools.lru_cache(maxsize=64)
def planned_participations(cfg: RunConfig) -> int:
    """The rounds a client is calibrated to take part in: the
    ``privacy.calibration-quantile`` quantile of Binomial(rounds, participation rate), so
    that at most that share of the clients would pass the target if none declined. The
    others decline once at their budget (by default the target): see :func:`budget`."""
    rounds, rate = cfg.train.rounds, participation_rate(cfg)
    if rate >= 1:
        return rounds
    # imported here: scipy.stats takes about a second, and every deployed ClientApp
    # process (one per message) imports this module but never calibrates
    from scipy.stats import binom

    quantile = float(binom.ppf(cfg.privacy.calibration_quantile, rounds, rate))
    return max(1, math.ceil(quantile))


def local_noise(cfg: RunConfig) -> float:
    """Local DP's noise multiplier: configured, or calibrated so a client taking part in
    :func:`planned_participations` rounds spends ``privacy.target-epsilon``."""
    p = cfg.privacy
    if p.noise_multiplier > 0:
        return p.noise_multiplier
    return calibrate_noise(
        p.target_epsilon, p.delta, 1.0, planned_participations(cfg), p.accountant, "none", "local"
    )


def adaptive_noise(cfg: RunConfig, plan: DpPlan) -> tuple[float, float]:
    """Adaptive clipping's noise std of the unclipped count and noise multiplier of the
    update, which together make one Gaussian mechanism of the plan's noise multiplier."""
    count_std = cfg.privacy.count_stddev or plan.cohort_size / 20
    try:
        return count_std, adaptive_update_noise(plan.noise_multiplier, count_std)
    except ValueError as err:
        raise ConfigError(
            f"privacy.adaptive: {err}; raise privacy.count-stddev (now {count_std:g}) or "
            f"the cohort size, or lower the noise"
        ) from None
