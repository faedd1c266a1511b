"""Client-level DP (DP-FedAvg) through Flower's DP wrapper strategies, exact and accounted.

Flower's four wrappers (clipping on the server or on the clients with Flower's clipping mods;
a fixed or an adaptive clip norm) clip the updates and noise their average. fedcore
subclasses them and changes what a privacy guarantee depends on:

- Noise comes from the OS CSPRNG (or, for experiments, a generator keyed by the run seed and
  round), not numpy's global RNG.
- A round is noised with the clip norm its updates were clipped to. Flower's adaptive
  wrappers update the norm first and noise with the new one, which under-noises whenever
  the norm shrinks.
- A reply with an error is dropped (and listed in ``last_failures``) instead of discarding
  the round. The wrapped FedAvg divides the sum by the expected cohort size (its
  ``dp_cohort_size``), so a missing client costs signal, not privacy.
- With client-side clipping, an update longer than the clip norm is rejected: a client
  without the clipping mod would otherwise void the guarantee unnoticed. Whether the replies
  are individual updates or one secure sum is decided from the configuration and the typed
  :class:`~privacy.secagg.aggregator.SecureSumReply`, never from a record a client writes.
- Every release is recorded as a :class:`~privacy.ledger.DpEvent` with the sampling that
  actually ran (``last_dp_events``), and the adaptive count's noise is folded into the
  event's effective noise multiplier.
- The adaptive norm follows Andrew et al. (2021): it grows when fewer than
  ``privacy.target-quantile`` of the updates are left unclipped and shrinks when more are.
  Flower's wrappers feed the clipped fraction into that rule, which drives the norm away
  from the quantile.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy
from flwr.supercore import log

from fedcore import seeding
from fedcore.arrays import to_numpy_dict, to_record
from fedcore.config import ConfigError, RunConfig
from privacy.accounting import would_exceed
from privacy.ledger import PrivacyLedger
from privacy.mechanisms import (
    adaptive_update_noise,
    add_gaussian,
    noised_unclipped_fraction,
    update_norm,
)
from privacy.plan import DpPlan, dp_plan
from privacy.secagg.aggregator import SecureSumReply
from strategies.fedavg import FedAvg

# Relative slack for float32 rounding when checking that clients clipped their updates.
_CLIP_TOLERANCE = 1e-4


class _Accounted:
    """What fedcore adds to each of Flower's DP wrappers (listed first in the bases)."""

    plan: DpPlan
    budget: tuple[float, float, str] | None = None  # (epsilon, delta, accountant)

    def _start(
        self, plan: DpPlan, budget: tuple[float, float, str] | None, secure: bool = False
    ) -> None:
        self.plan, self.budget, self.secure = plan, budget, secure
        self.ledger = PrivacyLedger()
        self.last_dp_events: list[dict] = []
        self.stop_reason: str | None = None
        self._dropped: list[str] = []
        self._in_sum: int | None = None  # clients in a securely aggregated sum
        self._round, self._round_clip = 0, self.clipping_norm

    @property
    def last_failures(self) -> list[str]:
        return self._dropped + self.strategy.last_failures

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.budget is not None:
            limit, delta, accountant = self.budget
            event = self.plan.event(server_round, self.clipping_norm)
            exceeds, eps = would_exceed(self.ledger, [event], limit, delta, accountant)
            if exceeds:
                self.stop_reason = (
                    f"privacy budget exhausted: round {server_round} would take every client "
                    f"to epsilon {eps:.3f} > budget {limit} (delta {delta}); stopping"
                )
                return []
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self._round, self._round_clip = server_round, self.clipping_norm
        self.last_dp_events = []
        if self.stop_reason is not None:
            return None, None
        arrays, metrics = super().aggregate_train(server_round, self._usable(replies))
        if arrays is not None and (noise := self._released_noise()) > 0:
            event = self.plan.event(server_round, self._round_clip, noise)
            self.ledger = self.ledger.record(event)
            self.last_dp_events = [event.to_dict()]
        return arrays, metrics

    def _released_noise(self) -> float:
        """The noise multiplier of this round's release (the server adds the planned one)."""
        return self.plan.noise_multiplier

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        self._dropped = []
        return super().aggregate_evaluate(server_round, replies)

    def _usable(self, replies: Iterable[Message]) -> list[Message]:
        """The replies without errors, and with client-side clipping, only updates within
        the clip norm (checked against the model sent). Under secure aggregation the one
        reply is the server's :class:`SecureSumReply`; a sum of k clipped updates is at most
        k clip norms long."""
        self._dropped, kept, self._in_sum = [], [], None
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self._dropped.append(f"node {node}: {msg.error.reason}")
                continue
            summands = 1
            if self.secure:
                if not isinstance(msg, SecureSumReply):
                    raise TypeError(
                        f"under secure aggregation the strategy takes the server's "
                        f"SecureSumReply, got a {type(msg).__name__} from node {node}"
                    )
                summands = self._in_sum = len(msg.clients)
            if self._clipped_by_clients and not self._within_clip(msg, summands):
                self._dropped.append(
                    f"node {node}: update is longer than {summands} x the clip norm "
                    f"{self._round_clip:.4g}; is Flower's clipping mod installed on that client?"
                )
                continue
            kept.append(msg)
        for reason in self._dropped:
            log(WARNING, "aggregate_train: rejected reply from %s", reason)
        return kept

    _clipped_by_clients = False

    def _within_clip(self, msg: Message, summands: int) -> bool:
        records = list(msg.content.array_records.values())
        if len(records) != 1:
            return True  # malformed: the wrapped strategy rejects it with the reason
        try:
            norm = update_norm(to_numpy_dict(records[0]), self.strategy._current)
        except (KeyError, ValueError):
            return True  # mis-shaped: likewise
        return norm <= summands * self._round_clip * (1 + _CLIP_TOLERANCE)

    def _add_noise_to_aggregated_arrays(self, arrays: ArrayRecord) -> ArrayRecord:
        std = self.noise_multiplier * self._round_clip / self.num_sampled_clients
        rng = seeding.noise_rng(self.plan.seeded_noise, self.plan.seed, self._round, 0)
        return to_record(add_gaussian(to_numpy_dict(arrays), std, rng))

    def _noisy_fraction(self, count: int, total: int) -> float:
        """The noised fraction of updates left *unclipped*, from Flower's ``count`` of
        clipped ones: Andrew et al.'s rule ``C <- C exp(-lr (b - target))`` reads the
        unclipped fraction ``b``; fed the clipped one, as Flower's wrappers do, the norm moves
        away from the target quantile (it shrinks when every update is clipped)."""
        rng = seeding.noise_rng(self.plan.seeded_noise, self.plan.seed, self._round, 1)
        return noised_unclipped_fraction(count, total, self.clipped_count_stddev, rng)


class ServerSideFixedClipping(_Accounted, flwr_strategy.DifferentialPrivacyServerSideFixedClipping):
    """Central DP-FedAvg: the server clips each update to a fixed norm and noises the sum."""


class ClientSideFixedClipping(_Accounted, flwr_strategy.DifferentialPrivacyClientSideFixedClipping):
    """Central DP-FedAvg with clipping on the clients (Flower's ``fixedclipping_mod``)."""

    _clipped_by_clients = True


class ServerSideAdaptiveClipping(
    _Accounted, flwr_strategy.DifferentialPrivacyServerSideAdaptiveClipping
):
    """Central DP-FedAvg whose clip norm tracks a quantile of the update norms."""


class ClientSideAdaptiveClipping(
    _Accounted, flwr_strategy.DifferentialPrivacyClientSideAdaptiveClipping
):
    """Adaptive clipping on the clients (Flower's ``adaptiveclipping_mod``)."""

    _clipped_by_clients = True


class DistributedNoise(ClientSideFixedClipping):
    """Distributed DP under secure aggregation: each client clips (Flower's
    ``fixedclipping_mod``) and adds ``z * clip / sqrt(m)`` of noise before masking, so the
    sum of the k clients that made it carries ``z * sqrt(k / m) * clip``; the server adds
    nothing and records that realised noise."""

    def _add_noise_to_aggregated_arrays(self, arrays: ArrayRecord) -> ArrayRecord:
        return arrays

    def _within_clip(self, msg: Message, summands: int) -> bool:
        return True  # the sum carries the clients' noise, which no clip bound covers

    def _released_noise(self) -> float:
        if self._in_sum is None:  # the round was aborted: no sum, nothing of the data released
            return 0.0
        return self.plan.realised_noise(self._in_sum)

    def check_release(self, server_round: int, in_sum: int) -> str | None:
        """Called by the secure aggregator before it unmasks a sum of ``in_sum`` clients:
        the reason not to release it, if any. A sum of fewer clients than the shares were
        sized for carries less noise than planned; one that the realised noise would take
        past the budget is not released either."""
        return self.plan.release_refusal(
            server_round, self.clipping_norm, in_sum, self.ledger, self.budget
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


def wrap_with_dp(cfg: RunConfig, inner: FedAvg) -> _Accounted:
    """``inner`` wrapped in the Flower DP strategy ``cfg.privacy`` asks for."""
    p = cfg.privacy
    plan = dp_plan(cfg)
    inner.dp_cohort_size = plan.cohort_size
    budget = (p.budget_epsilon, p.delta, p.accountant) if p.budget_epsilon > 0 else None
    if p.dp == "distributed":
        needed = p.clip_norm + 8 * plan.client_noise_std(p.clip_norm)
        if cfg.secagg.bound < needed:
            raise ConfigError(
                f"secagg.bound = {cfg.secagg.bound:g} would cut the clients' noise: distributed "
                f"DP needs at least clip-norm + 8 x the client noise std = {needed:.3g}"
            )
        strategy = DistributedNoise(inner, plan.noise_multiplier, p.clip_norm, plan.cohort_size)
    elif not p.adaptive:
        cls = ServerSideFixedClipping if p.clipping == "server" else ClientSideFixedClipping
        strategy = cls(inner, plan.noise_multiplier, p.clip_norm, plan.cohort_size)
    else:
        count_std, update_noise = adaptive_noise(cfg, plan)
        cls = ServerSideAdaptiveClipping if p.clipping == "server" else ClientSideAdaptiveClipping
        strategy = cls(
            inner,
            noise_multiplier=plan.noise_multiplier,
            num_sampled_clients=plan.cohort_size,
            initial_clipping_norm=p.clip_norm,
            target_clipped_quantile=p.target_quantile,
            clip_norm_lr=p.clip_lr,
            clipped_count_stddev=count_std,
        )
        # Flower derives the update noise for centred count bits; its mods send {0, 1} bits.
        strategy.noise_multiplier = update_noise
    strategy._start(plan, budget, secure=cfg.secagg.mode != "off")
    return strategy
