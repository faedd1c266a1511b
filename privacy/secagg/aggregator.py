"""The server side of secure aggregation over Flower: the round's message exchanges.

:class:`SecureAggregator` replaces the ``grid.send_and_receive`` of a training round. It runs
the four stages of :mod:`privacy.secagg.protocol` over the Grid and hands the strategy, in
place of the individual replies, one reply holding the unmasked aggregate (the global model
moved by the weighted mean of the cohort's updates, or for client-level DP by their sum, which
the DP strategy's fixed-denominator mean divides) plus an error reply for each client that
dropped out. Any strategy whose aggregation is a weighted mean therefore works unchanged; one
that needs individual updates is refused by the configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from logging import WARNING

import numpy as np
from flwr.app import (
    ArrayRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcore.arrays import from_numpy
from fedcore.config import ConfigError, RunConfig
from fedcore.keys import ARRAYS, METRICS, NUM_EXAMPLES, STATISTICS
from fedcore.statistics import Spec
from privacy.plan import min_in_sum
from privacy.secagg.encoding import encoding_bits, from_encoding, statistics_bound, wire_bound
from privacy.secagg.protocol import SecAggAbort
from privacy.secagg.quantize import fixed_point
from privacy.secagg.service import Observe, ProtocolAbort, run_protocol

SECURE_SUM = "secure-sum"  # MetricRecord entry of the aggregate reply: clients in the sum
# (for the round's record only: the server decides from SecureSumReply.clients, never from a
# record a client could have written)


class SecureSumReply(Message):
    """The one reply standing for a securely aggregated cohort, built by the server.

    Attributes:
        clients: the node ids whose masked inputs are in the sum. Server code that needs to
            know it (the DP strategy's clip and noise bookkeeping) reads this typed field.
    """

    clients: tuple[int, ...] = ()


_ABORTED = 0  # Flower error code for the replies of an aborted round


class StatisticsSum:
    """An algorithm's wire vectors (:mod:`fedcore.statistics`): the strategy gets their sum
    as one array, ``statistics``, and decodes it with the spec it computed itself.

    Args:
        spec_of: the spec of what clients send for the round's state.
    """

    def __init__(self, cfg: RunConfig, spec_of: Callable[[ArrayRecord], Spec]) -> None:
        self.cfg, self.spec_of = cfg, spec_of

    def input_length(self, arrays: ArrayRecord) -> int:
        return self.spec_of(arrays).size

    def input_bound(self, arrays: ArrayRecord) -> float:
        return statistics_bound(wire_bound(self.spec_of(arrays), self.cfg), self.cfg)

    def aggregate(
        self, arrays: ArrayRecord, total: np.ndarray, clients: int
    ) -> tuple[ArrayRecord, float]:
        total = from_encoding(total, self.spec_of(arrays), self.cfg)  # counts in whole units
        return ArrayRecord({STATISTICS: from_numpy(total)}), float(clients)


class SecureAggregator:
    """Runs secure aggregation rounds for ``cfg`` (``cfg.secagg.mode`` is not "off")."""

    def __init__(
        self,
        cfg: RunConfig,
        sum_format: StatisticsSum,
        release_guard: Callable[[int, int], str | None] | None = None,
    ) -> None:
        """``sum_format``: what is summed. ``release_guard(server_round, in_sum)``: the
        strategy's last word before a sum is unmasked (a reason to refuse it, or None)."""
        self.cfg = cfg
        self.release_guard = release_guard
        self.format = sum_format
        self.last_stage_seconds: dict[str, float] = {}
        self.last_abort: str | None = None  # why the last round released no sum (None: it did)

    def check_encoding(self, arrays: ArrayRecord) -> None:
        """ConfigError, before any round, if the encoding of what the clients mask for
        ``arrays`` could overflow or lose its rounding with every client in the sum."""
        try:
            bound = self.format.input_bound(arrays)
            fixed_point(self.cfg.data.num_clients, bound, *encoding_bits(self.cfg, bound))
        except ValueError as err:  # OverflowConfigError, PrecisionConfigError, no bound
            raise ConfigError(f"secure aggregation of this run's statistics: {err}") from None

    def send_and_receive(
        self,
        grid: Grid,
        messages: list[Message],
        arrays: ArrayRecord,
        server_round: int,
        observe: Observe = iter,
        timeout: float | None = None,
    ) -> list[Message]:
        """The training round of ``messages`` under secure aggregation; ``arrays`` is the
        model they carry, ``observe`` sees every reply of every stage (traffic, DP events)."""
        s = self.cfg.secagg
        self.last_stage_seconds, self.last_abort = {}, None
        if s.insecure_demo:
            _refuse_insecure_demo_when_deployed(grid)
        if not messages:
            return []
        bound = self.format.input_bound(arrays)
        fp = fixed_point(len(messages), bound, *encoding_bits(self.cfg, bound))
        by_node = {m.metadata.dst_node_id: m for m in messages}

        def before_unmask(survivors: int) -> None:
            self._check_noise_covered(survivors)
            if self.release_guard is not None:
                refusal = self.release_guard(server_round, survivors)
                if refusal is not None:
                    raise SecAggAbort(refusal)

        try:
            run = run_protocol(
                grid,
                messages,
                fp,
                self.format.input_length(arrays),
                server_round,
                self.cfg,
                observe=observe,
                timeout=timeout,
                before_unmask=before_unmask,
            )
        except ProtocolAbort as err:
            self.last_stage_seconds = err.stage_seconds
            reason = f"secure aggregation aborted in round {server_round}: {err}"
            log(WARNING, "%s", reason)
            self.last_abort = _abort_reason(reason, err.failures, len(messages))
            return [  # a client that failed before the abort keeps its own reason
                _error_reply(
                    m,
                    f"{reason}; this client: {err.failures[n]}" if n in err.failures else reason,
                )
                for n, m in by_node.items()
            ]
        self.last_stage_seconds = run.stage_seconds
        aggregate = self._reply(by_node[run.clients[0]], arrays, run.total, run.clients, run.inputs)
        replies = [aggregate]
        replies += [
            _error_reply(by_node[n], f"dropped out at {why}") for n, why in run.failures.items()
        ]
        return replies

    def _check_noise_covered(self, survivors: int) -> None:
        """Distributed DP-SGD: each client added noise for a sum of ``min_in_sum`` clients;
        a sum of fewer would carry less noise than the clients accounted for."""
        if self.cfg.privacy.dp != "sample-distributed":
            return
        needed = min_in_sum(self.cfg)
        if survivors < needed:
            raise SecAggAbort(
                f"only {survivors} masked inputs arrived; the clients' shares of the DP noise "
                f"cover a sum of at least {needed} (privacy.dropout-tolerance = "
                f"{self.cfg.privacy.dropout_tolerance:g}), so this sum is not released"
            )

    def _reply(
        self,
        template: Message,
        arrays: ArrayRecord,
        total: np.ndarray,
        in_sum: list[int],
        trained: dict[int, Message],
    ) -> SecureSumReply:
        """One reply standing for the cohort: what :attr:`format` makes of the sum."""
        new, weight = self.format.aggregate(arrays, total, len(in_sum))
        replies = [trained[n] for n in in_sum]
        metrics = _mean_metrics(replies)
        metrics[NUM_EXAMPLES] = weight
        metrics[SECURE_SUM] = len(replies)
        content = RecordDict({ARRAYS: new, METRICS: MetricRecord(metrics)})
        reply = SecureSumReply(content, reply_to=template)
        reply.clients = tuple(in_sum)
        return reply


def _refuse_insecure_demo_when_deployed(grid: Grid) -> None:
    """``secagg.insecure-demo`` is for simulation. A ServerApp run by a SuperLink (a deployed
    run, ``flwr run`` against a SuperLink) gets Flower's ``HttpGrid``; the simulation engines
    give an ``InMemoryGrid`` (Flower's) or fedcore's in-process Grid."""
    from flwr.superlink.grid.http_grid import HttpGrid  # Flower's deployed-runtime Grid

    if isinstance(grid, HttpGrid):
        raise ConfigError(
            "secagg.insecure-demo = true is refused in a deployed run (the ServerApp runs under "
            "a SuperLink): it lifts the security floor of secure aggregation"
        )


def _mean_metrics(replies: list[Message]) -> dict[str, float]:
    """The num-examples-weighted mean of the scalar training metrics (sent in the clear)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for r in replies:
        metrics = r.content[METRICS]
        if NUM_EXAMPLES not in metrics:  # secagg.clear-metrics = false: nothing in the clear
            continue
        w = metrics[NUM_EXAMPLES]
        if not _finite_number(w) or w < 0:  # a client's word: left out of the clear means
            continue
        for k, v in metrics.items():
            if k != NUM_EXAMPLES and _finite_number(v):
                sums[k] = sums.get(k, 0.0) + w * float(v)
                weights[k] = weights.get(k, 0.0) + w
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _abort_reason(reason: str, failures: dict[int, str], sampled: int) -> str:
    """An aborted round's reason: the protocol's, then how many clients failed before it
    (crashes, timeouts, malformed messages; each one's reason is in its error reply)."""
    if not failures:
        return reason
    node, why = min(failures.items())
    first = f"first: node {node}: {why}"
    return f"{reason}; {len(failures)} of {sampled} clients failed before it ({first})"


def _error_reply(msg: Message, reason: str) -> Message:
    return Message(Error(code=_ABORTED, reason=reason), reply_to=msg)
