"""The Flower strategy of an algorithm on typed statistics, and the server's privacy layers.

:class:`StatisticsStrategy` is a ``flwr.serverapp.strategy.Strategy`` built by composition:
a :class:`~strategies.cohort.Cohort` samples the clients and builds the messages (seeded, or
from the OS CSPRNG under DP), the algorithm's server hook turns the summed statistics into the
next state. In between it sums the replies, in reverse order of the client's layers:

- plain: each reply's wire vector is checked against the spec the server computed itself
  (length, finite, every entry within its bound, counts whole, weights non-negative; under
  client-side clipping its L2 norm within the clip norm) and summed; a bad reply is rejected
  with the reason, the others still count;
- secure aggregation: the one :class:`~privacy.secagg.aggregator.SecureSumReply` holds the
  sum; nothing else is read;
- a robust aggregator (``strategy.name`` in :data:`fedcore.robust.ROBUST`), server-side
  clipping of each update (``strategy.server-clip-norm``) or a pre-aggregation (bucketing,
  NNM), without secure aggregation or noise on the sum: each client's statistics are
  decoded alone, clipped, mixed, and :func:`fedcore.robust.combine` stands in for the sum;
- client-level DP: the server adds ``N(0, (z C)^2)`` to the sum (distributed DP: the clients'
  shares already did), and records the release as a DP event; under adaptive clipping
  (``privacy.adaptive``, Andrew et al. 2021) ``C`` is the round's norm, which then moves
  toward the target quantile of the update norms by the noised count of unclipped updates
  (clipped on the server, or on the clients, which send the norm's bit);
- :func:`fedcore.statistics.decode`, then the server hook (post-processing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from fedcore import robust, seeding
from fedcore.arrays import from_numpy, to_numpy, to_numpy_dict, to_record
from fedcore.config import CLIENT_LEVEL_DP, RunConfig
from fedcore.config.rules import individual_updates
from fedcore.keys import (
    ARRAYS,
    CLIP_NORM,
    COMPRESSED,
    METRICS,
    NORM_BIT,
    NUM_EXAMPLES,
    STATISTICS,
)
from fedcore.statistics import INTEGER, Spec, Summed, broadcast_weight, clip_l2, decode
from fedcore.tasks import Algorithm
from privacy.accounting import would_exceed
from privacy.ledger import PrivacyLedger
from privacy.mechanisms import (
    add_gaussian,
    discrete_gaussian,
    geometric_clip,
    noised_unclipped_fraction,
)
from privacy.plan import (
    adaptive_noise,
    dp_plan,
    local_noise,
    record_event,
    record_noise,
    record_scale,
)
from privacy.secagg.aggregator import SecureSumReply, StatisticsSum
from strategies.aggregate import MetricMean
from strategies.cohort import Cohort, evaluation_mean

# Relative slack of the bound and norm checks, by the dtype a wire vector arrived in: float64
# end to end, or rounded once to float32 by a client (``Algorithm.wire_dtype``).
_TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-6}
DOWNLINK = 2**31 - 1  # the compressed model's stream key (clients' keys are partition ids)
# The largest entry a wire vector may hold whatever its spec's bound: a mean of such
# entries, times a weight bound, squared (FedAdam's second moment) stays finite in float64.
# Found by fuzzing (issue 17): one reply of 1e300 made FedAdam's moments inf for the run.
WIRE_CEILING = 1e100


def check_wire(
    vector: np.ndarray, spec: Spec, clipped: bool = False, tolerance: float = 1e-9
) -> None:
    """ValueError naming the problem unless ``vector`` could be a client's wire vector for
    ``spec``: the right length, finite, every entry within its array's bound, and a weighted
    entry within its bound times its own weight (a client cannot claim a small weight for a
    large value: that would move the mean past the bound); weights non-negative and, unless
    the client ``clipped`` the whole vector's norm (client-level DP, which scales counts
    too), integer arrays whole. Clipping scales a value and its weight alike, so the rest
    holds for clipped vectors too."""
    _check_form(vector, spec)
    _check_entries(vector, spec, clipped, tolerance)


def _check_form(vector: np.ndarray, spec: Spec) -> None:
    if vector.shape != (spec.size,):
        raise ValueError(f"statistics of shape {vector.shape}, expected ({spec.size},)")
    if not np.isfinite(vector).all():
        raise ValueError("statistics are not finite")
    if np.abs(vector).max(initial=0) > WIRE_CEILING:  # an unbounded spec's (plain FedAvg's)
        raise ValueError(
            f"statistics have an entry beyond {WIRE_CEILING:g}, past which the server's sums, "
            "means and optimizer moments overflow"
        )


def _check_entries(vector: np.ndarray, spec: Spec, clipped: bool, tolerance: float) -> None:
    """:func:`check_wire` past the vector's form: bounds, weights, whole counts."""
    parts = spec.split(vector)
    for name, a in spec.arrays:
        part = parts[name]
        if np.abs(part).max(initial=0) > a.bound * (1 + tolerance):
            raise ValueError(f"{name!r} has an entry beyond its bound {a.bound:g}")
        if a.kind == INTEGER and not clipped and not np.array_equal(part, np.rint(part)):
            raise ValueError(f"integer array {name!r} has entries that are not whole")
        if name in spec.weights and part.min(initial=0) < 0:
            raise ValueError(f"weight {name!r} has a negative entry")
        if a.weight is not None and math.isfinite(a.bound):
            weight = spec[a.weight]
            scale = weight.bound if math.isfinite(weight.bound) else 1.0
            limit = a.bound * np.abs(broadcast_weight(parts[a.weight], a.shape)) / scale
            if (np.abs(part) > limit * (1 + tolerance) + 1e-300).any():
                raise ValueError(
                    f"{name!r} has an entry beyond its bound {a.bound:g} times its weight "
                    f"{a.weight!r}"
                )


def _check_secure_counts(total: np.ndarray, spec: Spec, clients: int, tolerance: float) -> None:
    """ValueError unless every count of a secure sum of ``clients`` exact wire vectors is
    within ``clients`` times its bound, and every weight's sum is >= 0. The server sees no
    client's vector: a client that claims a count past its bound (the encoding holds up to
    ``2^f`` times it) or a negative weight shows only here, and only when it moves the sum
    outside what honest clients could send (secure aggregation without range proofs)."""
    for name, part in spec.split(total).items():
        a = spec[name]
        if a.kind != INTEGER:
            continue
        if np.abs(part).max(initial=0) > clients * a.bound * (1 + tolerance):
            raise ValueError(
                f"the secure sum of {clients} clients has {name!r} beyond {clients} x its "
                f"bound {a.bound:g}: a client claimed more than it may"
            )
        if name in spec.weights and part.min(initial=0) < 0:
            raise ValueError(f"the secure sum of {clients} clients has a negative weight {name!r}")


def noise_norm_limit(dimension: int, clip_norm: float, noise_multiplier: float) -> float:
    """The longest a local-DP client's noised wire vector may be: the clip norm plus the
    norm of its noise, N(0, (z C)^2 I_d), which exceeds ``z C (sqrt(d) + 10)`` with
    probability below exp(-50) (Gaussian concentration of the norm, a 1-Lipschitz function).
    A longer vector was not noised from a clipped one."""
    return clip_norm + noise_multiplier * clip_norm * (math.sqrt(dimension) + 10.0)


class StatisticsStrategy(Strategy):
    """Rounds of ``algorithm``: sample, send the state, sum the statistics, server hook."""

    def __init__(self, algorithm: Algorithm, cfg: RunConfig, cohort: Cohort | None = None) -> None:
        self.algorithm, self.cfg = algorithm, cfg
        self.cohort = cohort if cohort is not None else Cohort.of(cfg)
        p = cfg.privacy
        self.plan = dp_plan(cfg) if p.dp in ("client", "distributed") else None
        self.record_z = record_noise(cfg) if p.dp == "record" else None
        self.budget = (
            (p.budget_epsilon, p.delta, p.accountant)
            if self.plan is not None and p.budget_epsilon > 0
            else None
        )
        self.clip = p.clip_norm  # the round's clip norm (adaptive: it moves between rounds)
        # adaptive clipping: the count's noise std and the update's noise multiplier
        self.adaptive = adaptive_noise(cfg, self.plan) if p.adaptive else None
        self.ledger = PrivacyLedger()
        self.last_failures: list[str] = []
        self.last_dp_events: list[dict] = []
        self.stop_reason: str | None = None
        self._state: dict[str, np.ndarray] = {}
        self._spec: Spec | None = None
        # the defences that read each client's update (fedcore.robust): whether any is on,
        # and centered clipping's reference, the last aggregate's flat location (state to
        # checkpoint; None: zeros)
        self.individual = individual_updates(cfg.strategy) is not None
        # replies decoded (fedcore.compressed); under secure aggregation the sum is exact
        self.compressed = cfg.compression.uplink != "none" and cfg.secagg.mode == "off"
        self.robust_reference: np.ndarray | None = None

    # -- what the secure aggregator and the round loop ask of it ------------------------
    def spec_of(self, arrays: ArrayRecord) -> Spec:
        """The spec of the statistics for the state ``arrays`` (the server's own view)."""
        return self.algorithm.spec(self.cfg, to_numpy_dict(arrays))

    def sum_format(self) -> StatisticsSum:
        return StatisticsSum(self.cfg, self.spec_of)

    def check_release(self, server_round: int, in_sum: int) -> str | None:
        """Distributed DP: the reason not to unmask a sum of ``in_sum`` clients (too few
        noise shares, or a release past the budget), or None."""
        if self.cfg.privacy.dp != "distributed":
            return None
        return self.plan.release_refusal(
            server_round, self.cfg.privacy.clip_norm, in_sum, self.ledger, self.budget
        )

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, object]:
        """What this strategy carries from round to round (JSON values or NumPy arrays):
        the round's clip norm (adaptive clipping moves it) and the server's privacy ledger
        (the budget check reads it), and centered clipping's last aggregate. A checkpoint
        keeps it; :meth:`load_state` restores it."""
        state: dict[str, object] = {"clip": float(self.clip), "ledger": self.ledger.to_jsonl()}
        if self.robust_reference is not None:
            state["robust-reference"] = np.asarray(self.robust_reference)
        return state

    def load_state(self, state: dict[str, object]) -> None:
        self.clip = float(state["clip"])
        self.ledger = PrivacyLedger.from_jsonl(str(state["ledger"]))
        self.robust_reference = state.get("robust-reference")

    def _over_budget(self, server_round: int, noise: float | None = None) -> str | None:
        if self.budget is None:
            return None
        limit, delta, accountant = self.budget
        event = self.plan.event(server_round, self.clip, noise)
        exceeds, eps = would_exceed(self.ledger, [event], limit, delta, accountant)
        if exceeds:
            return (
                f"privacy budget exhausted: round {server_round} would reach epsilon "
                f"{eps:.3f} > budget {limit} (delta {delta}); stopping"
            )
        return None

    # -- Flower's five verbs ----------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._state = to_numpy_dict(arrays)  # (aggregate_train reads them even after a stop)
        self._spec = self.algorithm.spec(self.cfg, self._state)
        if self.plan is not None:
            self.stop_reason = self._over_budget(server_round)
            if self.stop_reason is not None:
                return []
        if self.adaptive is not None and self.cfg.privacy.clipping == "client":
            config = ConfigRecord({**config, CLIP_NORM: self.clip})
        arrays, key = self._for_clients(arrays, server_round)
        return self.cohort.configure_train(server_round, arrays, config, grid, key)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.last_failures, self.last_dp_events = [], []
        spec, p = self._spec, self.cfg.privacy
        total, clients, metrics = np.zeros(spec.size), 0, MetricMean()
        each: list[np.ndarray] = []  # a robust aggregator's: every client's wire vector
        clipped = 0  # adaptive clipping: how many updates were longer than the norm
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.last_failures.append(f"node {node}: {msg.error.reason}")
                continue
            if self.cfg.secagg.mode != "off" and not isinstance(msg, SecureSumReply):
                raise TypeError(  # never a client's word: the aggregator builds the sum
                    "under secure aggregation the strategy takes only the server's "
                    f"SecureSumReply, not node {node}'s reply"
                )
            try:
                vector, tolerance = self._statistics(msg)
                self._check(msg, vector, tolerance)
                record = msg.content.metric_records.get(METRICS, MetricRecord())
                bit = self._norm_bit(vector, record)
                if p.dp == "client" and (p.clipping == "server" or self.compressed):
                    vector = clip_l2(vector, self.clip)  # (compressed: the decoded vector's)
                elif p.dp == "local" and self.compressed:  # no more than an honest one moves
                    limit = noise_norm_limit(spec.size, self.clip, local_noise(self.cfg))
                    vector = clip_l2(vector, limit)
                scalars = MetricMean.scalars(record, NUM_EXAMPLES)
                scalars.pop(NORM_BIT, None)  # released only noised, in the count below
                in_reply = len(msg.clients) if isinstance(msg, SecureSumReply) else 1
                weight = MetricMean.weight(record, NUM_EXAMPLES, in_reply)
            except ValueError as err:
                self.last_failures.append(f"node {node}: bad statistics: {err}")
                continue
            if self.individual:
                each.append(vector)
            else:
                total += vector
            clients += in_reply
            clipped += bit
            metrics.add(scalars, weight)
        for reason in self.last_failures:
            log(WARNING, "aggregate_train: rejected reply from %s", reason)
        if clients == 0:
            return None, None
        exact = p.dp == "off" or (p.dp not in CLIENT_LEVEL_DP and p.dp != "record")
        if self.individual:
            try:
                summed = self._robust(server_round, [decode(v, spec, 1, exact) for v in each])
            except ValueError as err:  # a cohort too small for the rule (Bulyan): skip it
                log(WARNING, "aggregate_train: round %d not aggregated: %s", server_round, err)
                self.last_failures.append(f"robust aggregation: {err}")
                return None, None
        else:
            summed = decode(self._noised(server_round, total, clients), spec, clients, exact)
        if self.adaptive is not None:
            self._adapt(server_round, clipped, clients)
        new_state, server_metrics = self.algorithm.server(self._state, summed, self.cfg)
        if self.algorithm.finished is not None and self.algorithm.finished(new_state):
            self.stop_reason = f"{self.algorithm.name} finished: its state is final"
        return to_record(new_state), MetricRecord({**metrics.result(), **server_metrics})

    def _robust(self, server_round: int, one_each: list) -> Summed:
        """The defences on each client's decoded statistics: server-side norm clipping, the
        pre-aggregation (bucketing: permuted by the run seed and round), then the robust
        rule, or the plain sum after an optimizer's name; centered clipping starts from the
        last round's aggregate and leaves this one's for the next."""
        s = self.cfg.strategy
        if s.server_clip_norm > 0:
            one_each = robust.clip_values(one_each, s.server_clip_norm)
        rng = seeding.numpy_rng(self.cfg.seed, seeding.ROBUST_BUCKETS, server_round)
        mixed = robust.pre_aggregate(
            s.pre_aggregation, one_each, s.num_malicious, s.bucket_size, rng
        )
        reference = self.robust_reference
        if reference is not None and reference.shape != (robust.flat_values(mixed).shape[1],):
            reference = None  # the spec changed: start again from zeros
        summed = robust.combine(
            s.name if s.name in robust.ROBUST else "mean",
            mixed,
            s.trim_beta,
            s.num_malicious,
            select=s.krum_select,
            reference=reference,
            radius=s.cc_radius,
            iterations=s.cc_iterations,
        )
        if s.name == "centered-clipping":
            self.robust_reference = robust.location(summed)
        return summed

    def _statistics(self, msg: Message) -> tuple[np.ndarray, float]:
        """The reply's wire vector as float64, and the checks' slack for the dtype it came
        in; a compressed reply (``compression.uplink``) decoded first."""
        compressed = msg.content.array_records.get(COMPRESSED)
        if self.cfg.compression.uplink != "none" and not isinstance(msg, SecureSumReply):
            from fedcore.compressed import unpack

            if compressed is None or len(msg.content.array_records) != 1:
                raise ValueError(f"expected one ArrayRecord {COMPRESSED!r} (compression.uplink)")
            return unpack(to_numpy_dict(compressed), self._spec), _TOLERANCE[np.dtype(np.float64)]
        records = list(msg.content.array_records.values())
        if len(records) != 1 or STATISTICS not in records[0]:
            raise ValueError(f"expected one ArrayRecord with {STATISTICS!r}")
        wire = to_numpy(records[0][STATISTICS])
        if wire.dtype not in _TOLERANCE:
            raise ValueError(f"statistics of dtype {wire.dtype}, expected float64 or float32")
        return np.asarray(wire, np.float64), _TOLERANCE[wire.dtype]

    def _check(self, msg: Message, vector: np.ndarray, tolerance: float) -> None:
        """ValueError unless ``vector`` is what the reply ``msg`` may hold: a client's wire
        vector (:func:`check_wire`; clipped under client-side clipping; under local DP
        noised from a clipped one), or a secure sum whose norm the clients' clips bound."""
        p, spec = self.cfg.privacy, self._spec
        _check_form(vector, spec)
        clip = self.clip
        # (only DP reads the norm: a BLAS call per reply, whose threads spin on a second core)
        norm = float(np.linalg.norm(vector)) if p.dp in CLIENT_LEVEL_DP else 0.0
        if isinstance(msg, SecureSumReply):  # k clipped vectors sum to at most k clip norms
            if p.dp == "client" and norm > len(msg.clients) * clip * (1 + tolerance):
                raise ValueError(
                    f"the secure sum of {len(msg.clients)} clients has L2 norm {norm:.4g}, "
                    f"more than {len(msg.clients)} x the clip norm {clip:g}: a client did "
                    "not clip"
                )
            if p.dp not in CLIENT_LEVEL_DP:  # whole counts: each client's within its bound
                _check_secure_counts(vector, spec, len(msg.clients), tolerance)
            return  # (distributed DP: the clients' noise shares, which no clip bounds)
        if self.compressed:  # decoded: its entries checked; its norm, which compression
            # moves, is clipped in aggregate_train: to the clip norm under central DP, to
            # what local DP's noise reaches under local DP (compression came after the noise)
            if p.dp != "local":
                _check_entries(vector, spec, p.dp in CLIENT_LEVEL_DP, tolerance)
            return
        if p.dp == "local":
            limit = noise_norm_limit(spec.size, clip, local_noise(self.cfg))
            if norm > limit:
                raise ValueError(
                    f"L2 norm {norm:.4g} exceeds {limit:.4g}, the clip norm plus what local "
                    "DP's noise reaches"
                )
            return
        client_side = p.dp in CLIENT_LEVEL_DP and (p.dp, p.clipping) != ("client", "server")
        _check_entries(vector, spec, client_side, tolerance)
        if client_side and norm > clip * (1 + tolerance):
            raise ValueError(f"L2 norm {norm:.4g} exceeds the clip norm {clip:g}")

    def _noised(self, server_round: int, total: np.ndarray, clients: int) -> np.ndarray:
        """The sum the server hook may see: under central client-level DP with the
        server's noise added; the release recorded in ``last_dp_events``."""
        if self.record_z is not None:
            return self._record_noised(server_round, total)
        if self.plan is None:
            return total
        p, noise = self.cfg.privacy, None
        if p.dp == "client":
            z = self.plan.noise_multiplier if self.adaptive is None else self.adaptive[1]
            std = z * self.clip
            rng = seeding.noise_rng(p.seeded_noise, self.cfg.seed, server_round, 0)
            total = add_gaussian(total, std, rng)
        else:  # distributed: the clients' noise shares, as many as reached the sum
            noise = self.plan.realised_noise(clients)
        event = self.plan.event(server_round, self.clip, noise)
        self.ledger = self.ledger.record(event)
        self.last_dp_events = [event.to_dict()]
        return total

    def _record_noised(self, server_round: int, total: np.ndarray) -> np.ndarray:
        """Record-level DP: the sum plus Gaussian noise of std ``z * l2`` (Laplace noise of
        scale ``z * l1``; discrete Gaussian noise of scale ``z * l2`` on counts) on every
        entry, for the algorithm's sensitivities to one record of the round's spec; the
        release recorded."""
        p, z = self.cfg.privacy, self.record_z
        l1, l2 = self.algorithm.record_sensitivity(self.cfg, self._state)
        scale = record_scale(self.cfg, l1, l2)
        rng = seeding.noise_rng(p.seeded_noise, self.cfg.seed, server_round, 0)
        if p.mechanism == "laplace":
            total = total + rng.laplace(0.0, scale, total.shape)
        elif p.mechanism == "discrete-gaussian":  # integer noise: for sums that are all counts
            reals = [name for name, a in self._spec.arrays if a.kind != INTEGER]
            if reals:
                raise ValueError(
                    f"privacy.mechanism = 'discrete-gaussian' adds integer noise, which hides "
                    f"nothing of real-valued sums ({', '.join(reals)}); use 'gaussian'"
                )
            total = total + discrete_gaussian(total.shape, scale, rng)
        else:
            total = add_gaussian(total, scale, rng)
        event = record_event(self.cfg, z, l1, l2, server_round)
        self.ledger = self.ledger.record(event)
        self.last_dp_events = [event.to_dict()]
        return total

    def _norm_bit(self, vector: np.ndarray, record: MetricRecord) -> int:
        """Adaptive clipping: 1 if this client's update was longer than the round's norm (the
        server measures it, or the client that clipped says so), else 0."""
        if self.adaptive is None:
            return 0
        if self.cfg.privacy.clipping == "server":
            return int(float(np.linalg.norm(vector)) > self.clip)
        bit = record.get(NORM_BIT)
        if bit not in (0, 1, 0.0, 1.0, True, False):
            raise ValueError(f"adaptive clipping needs the reply's {NORM_BIT!r} as 0 or 1")
        return int(bit)

    def _adapt(self, server_round: int, clipped: int, clients: int) -> None:
        """The next round's clip norm from this round's noised unclipped fraction."""
        p = self.cfg.privacy
        rng = seeding.noise_rng(p.seeded_noise, self.cfg.seed, server_round, 1)
        unclipped = noised_unclipped_fraction(clipped, clients, self.adaptive[0], rng)
        self.clip = geometric_clip(self.clip, unclipped, p.target_quantile, p.clip_lr)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.algorithm.evaluate_client is None:  # the server evaluates (evaluate.server)
            return []
        arrays, key = self._for_clients(arrays, server_round)
        return self.cohort.configure_evaluate(server_round, arrays, config, grid, key)

    def _for_clients(self, arrays: ArrayRecord, server_round: int) -> tuple[ArrayRecord, str]:
        """The state the clients receive, and the record it travels as: without the
        algorithm's server-only arrays (an optimizer's buffers), and under
        ``compression.downlink`` quantized (one draw per round, every client gets it)."""
        if self.algorithm.server_only:
            arrays = ArrayRecord(self.algorithm.client_state(arrays))
        c = self.cfg.compression
        if c.downlink == "none":
            return arrays, ARRAYS
        from fedcore.compressed import pack_model  # (only runs that compress load it)

        rng = seeding.numpy_rng(self.cfg.seed, seeding.COMPRESSION, server_round, DOWNLINK)
        packed = pack_model(to_numpy_dict(arrays), c.downlink_bits, c.block, rng)
        return ArrayRecord({k: from_numpy(v) for k, v in packed.items()}), COMPRESSED

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The clients' metrics weighted by their test-set sizes, with the spread of their
        accuracy, as for model tasks."""
        metrics, self.last_failures = evaluation_mean(replies)
        return metrics

    def summary(self) -> None:
        log(WARNING, "%s on typed statistics (%s)", self.algorithm.name, type(self).__name__)
