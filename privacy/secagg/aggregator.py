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

import time
from collections.abc import Callable, Iterable, Iterator
from logging import WARNING
from typing import Protocol

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcore.arrays import from_numpy, to_numpy, to_record
from fedcore.config import ConfigError, RunConfig
from fedcore.exchange import send_and_receive
from fedcore.keys import (
    ARRAYS,
    CONFIG,
    MASKED,
    METRICS,
    NUM_EXAMPLES,
    SECAGG,
    SECAGG_BITS,
    SECAGG_STAGE,
    SERVER_ROUND,
    STATISTICS,
)
from fedcore.statistics import Spec
from privacy.plan import min_in_sum
from privacy.secagg import graph, shamir
from privacy.secagg.protocol import MalformedInput, PublicKeys, SecAggAbort, SecAggServer
from privacy.secagg.quantize import decode, fixed_point, input_bound
from privacy.secagg.weighting import average_of_sum, masked_length, statistics_bound

Observe = Callable[[Iterable[Message]], Iterator[Message]]
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


class SumFormat(Protocol):
    """What the clients of a round mask, as the server sees it: the length and range of
    every client's input for the state ``arrays`` the round sends, and what the strategy is
    handed in place of the individual replies once the sum is unmasked: the reply's arrays
    and its weight (``num-examples``)."""

    def input_length(self, arrays: ArrayRecord) -> int: ...

    def input_bound(self, arrays: ArrayRecord) -> float: ...

    def aggregate(
        self, arrays: ArrayRecord, total: np.ndarray, clients: int
    ) -> tuple[ArrayRecord, float]: ...


class ModelUpdateSum:
    """A model's weighted mean update (:mod:`privacy.secagg.weighting`): the strategy gets
    the model moved by it, so its weighted mean of this one reply is the step itself."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def input_length(self, arrays: ArrayRecord) -> int:
        return masked_length(arrays)

    def input_bound(self, arrays: ArrayRecord) -> float:
        return input_bound(self.cfg.secagg.bound)

    def aggregate(
        self, arrays: ArrayRecord, total: np.ndarray, clients: int
    ) -> tuple[ArrayRecord, float]:
        step = average_of_sum(arrays, total, self.cfg)
        new, offset = {}, 0
        for name, array in arrays.items():
            current = to_numpy(array)
            size = current.size
            new[name] = (current + step[offset : offset + size].reshape(current.shape)).astype(
                current.dtype
            )
            offset += size
        # from the sum, not the clear metrics (a client may send none): each client masked
        # its weight over secagg.max-weight; client-level DP weighs every client as one
        client_level = self.cfg.privacy.dp in ("client", "distributed")
        weight = clients if client_level else total[-1] * self.cfg.secagg.max_weight
        return to_record(new), float(np.rint(weight))


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
        return statistics_bound(self.spec_of(arrays).bound, self.cfg)

    def aggregate(
        self, arrays: ArrayRecord, total: np.ndarray, clients: int
    ) -> tuple[ArrayRecord, float]:
        return ArrayRecord({STATISTICS: from_numpy(total)}), float(clients)


class SecureAggregator:
    """Runs secure aggregation rounds for ``cfg`` (``cfg.secagg.mode`` is not "off")."""

    def __init__(
        self,
        cfg: RunConfig,
        release_guard: Callable[[int, int], str | None] | None = None,
        sum_format: SumFormat | None = None,
    ) -> None:
        """``release_guard(server_round, in_sum)``: the DP strategy's last word before a sum
        is unmasked (a reason to refuse it, or None). ``sum_format``: what is summed
        (default: a model's weighted mean update)."""
        self.cfg = cfg
        self.release_guard = release_guard
        self.format = sum_format if sum_format is not None else ModelUpdateSum(cfg)
        self.last_stage_seconds: dict[str, float] = {}

    def check_encoding(self, arrays: ArrayRecord) -> None:
        """ConfigError, before any round, if the encoding of what the clients mask for
        ``arrays`` could overflow or lose its rounding with every client in the sum."""
        try:
            bound = self.format.input_bound(arrays)
            fixed_point(self.cfg.data.num_clients, bound, self.cfg.secagg.frac_bits)
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
        self.last_stage_seconds = {}
        if s.insecure_demo:
            _refuse_insecure_demo_when_deployed(grid)
        if not messages:
            return []
        fp = fixed_point(len(messages), self.format.input_bound(arrays), s.frac_bits)
        for m in messages:
            m.content[CONFIG][SECAGG_STAGE] = "train"
            m.content[CONFIG][SECAGG_BITS] = fp.bits
        by_node = {m.metadata.dst_node_id: m for m in messages}
        failures: dict[int, str] = {}

        def exchange(stage: str, payloads: dict[int, ConfigRecord | None]) -> dict[int, Message]:
            start = time.perf_counter()
            if stage == "train":
                out = list(payloads.values())
            else:
                out = [
                    self._stage_message(node, server_round, stage, p)
                    for node, p in payloads.items()
                ]
            replies: dict[int, Message] = {}
            received = send_and_receive(grid, out, timeout, self.cfg.engine.poll_interval)
            # sending gave each message its id; an error the SuperLink writes for a lost
            # node comes from the SuperLink, so replies are matched by the message they answer
            sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in out}
            for reply in observe(received):
                node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                if reply.has_error():
                    failures[node] = f"{stage}: {reply.error.reason}"
                else:
                    replies[node] = reply
            for node in payloads:
                if node not in replies and node not in failures:
                    failures[node] = f"{stage}: no reply"
            self.last_stage_seconds[stage] = time.perf_counter() - start
            return replies

        trained = exchange("train", by_node)
        nodes = sorted(trained)
        ids = {node: i + 1 for i, node in enumerate(nodes)}  # protocol ids: 1..n
        node_of = {i: node for node, i in ids.items()}
        degree = None if s.mode == "full" else (s.degree or graph.default_degree(len(nodes)))
        server = SecAggServer(
            server_round,
            fp,
            s.threshold,
            degree,
            seed=self.cfg.seed,
            input_length=self.format.input_length(arrays),
            insecure_demo=s.insecure_demo,
        )
        try:
            parsed = _parsed(trained, _public_keys, "train", failures)
            neighbours = server.collect_keys({ids[n]: k for n, k in parsed.items()})
            keys = server.roster
            shared = exchange(
                "share-keys",
                {  # each client gets the keys of its neighbours only (SecAgg+: O(log n))
                    node_of[i]: ConfigRecord(
                        {
                            **_roster_record({j: keys[j] for j in [i, *neighbours[i]]}),
                            "me": i,
                            "neighbours": neighbours[i],
                        }
                    )
                    for i in keys
                },
            )
            sent = _parsed(shared, _ciphertexts, "share-keys", failures)
            inbox = server.route_shares({ids[n]: c for n, c in sent.items()})
            masked = exchange(
                "masked-input",
                {
                    node_of[i]: ConfigRecord(
                        {"from": sorted(box), "ciphertexts": [box[u] for u in sorted(box)]}
                    )
                    for i, box in inbox.items()
                },
            )
            survivors = server.collect_masked(
                {ids[n]: y for n, y in _parsed(masked, _masked, "masked-input", failures).items()}
            )
            self._check_noise_covered(len(survivors))
            if self.release_guard is not None:
                refusal = self.release_guard(server_round, len(survivors))
                if refusal is not None:
                    raise SecAggAbort(refusal)
            revealed = exchange(
                "unmask",
                {node_of[i]: ConfigRecord({"survivors": sorted(survivors)}) for i in survivors},
            )
            shares = _parsed(revealed, _shares, "unmask", failures)
            total = decode(server.unmask({ids[n]: v for n, v in shares.items()}), fp)
            in_sum = [node_of[i] for i in sorted(server.u3)]
            aggregate = self._reply(by_node[in_sum[0]], arrays, total, in_sum, trained)
        except SecAggAbort as err:  # anything else is a bug: its traceback reaches the log
            reason = f"secure aggregation aborted in round {server_round}: {err}"
            log(WARNING, "%s", reason)
            return [  # a client that failed before the abort keeps its own reason
                _error_reply(
                    m, f"{reason}; this client: {failures[n]}" if n in failures else reason
                )
                for n, m in by_node.items()
            ]
        for i, why in server.dropped.items():
            failures[node_of[i]] = why
        replies = [aggregate]
        replies += [
            _error_reply(by_node[n], f"dropped out at {why}") for n, why in failures.items()
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

    def _stage_message(
        self, node: int, server_round: int, stage: str, payload: ConfigRecord
    ) -> Message:
        config = ConfigRecord({SERVER_ROUND: server_round, SECAGG_STAGE: stage})
        return Message(
            RecordDict({CONFIG: config, SECAGG: payload}),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
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


def _parsed(
    replies: dict[int, Message], parse: Callable[[Message], object], stage: str, failures: dict
) -> dict[int, object]:
    """``parse`` of each reply; a client whose reply is malformed is dropped, with the reason
    in ``failures``, as Bonawitz et al.'s server drops a client that does not follow the
    protocol (its honest neighbours' sum is still recovered)."""
    out = {}
    for node, reply in replies.items():
        try:
            out[node] = parse(reply)
        except MalformedInput as err:
            failures[node] = f"{stage}: malformed, dropped: {err}"
    return out


def _record(reply: Message, kind: type) -> ConfigRecord | ArrayRecord:
    record = reply.content.get(SECAGG)
    if not isinstance(record, kind):
        raise MalformedInput(f"the reply has no {kind.__name__} {SECAGG!r}")
    return record


def _public_keys(reply: Message) -> PublicKeys:
    record = _record(reply, ConfigRecord)
    fields = [record.get(k) for k in ("channel", "mask", "seed-hash")]
    if not all(isinstance(f, bytes) for f in fields):
        raise MalformedInput("the reply's public keys are not all bytes")
    return PublicKeys(*fields)


def _masked(reply: Message) -> np.ndarray:
    record = _record(reply, ArrayRecord)
    if MASKED not in record:
        raise MalformedInput(f"the reply has no {MASKED!r} array")
    return np.array(to_numpy(record[MASKED]))


def _roster_record(keys: dict[int, PublicKeys]) -> dict:
    ids = sorted(keys)
    return {
        "roster-ids": ids,
        "roster-channel": [keys[i].channel for i in ids],
        "roster-mask": [keys[i].mask for i in ids],
        "roster-seed-hash": [keys[i].seed_hash for i in ids],
    }


def _ciphertexts(reply: Message) -> dict[int, bytes]:
    record = _record(reply, ConfigRecord)
    to, blobs = record.get("to", []), record.get("ciphertexts", [])
    if not isinstance(to, list) or not isinstance(blobs, list) or len(to) != len(blobs):
        raise MalformedInput("the reply's receivers and ciphertexts differ in length")
    ids = all(isinstance(v, int) and not isinstance(v, bool) for v in to)
    if not ids or len(set(to)) != len(to):
        raise MalformedInput("the reply's receivers are not distinct client ids")
    return dict(zip(to, blobs, strict=True))


def _shares(reply: Message) -> dict[int, tuple[str, np.ndarray]]:
    record = _record(reply, ConfigRecord)
    owners, kinds, blobs = (record.get(k, []) for k in ("owners", "kinds", "shares"))
    if not all(isinstance(f, list) for f in (owners, kinds, blobs)):
        raise MalformedInput("the unmasking reply's owners, kinds and shares are not lists")
    if not all(isinstance(o, int) and not isinstance(o, bool) for o in owners):
        raise MalformedInput("the unmasking reply's owners are not client ids")
    if not len(owners) == len(kinds) == len(blobs) or len(set(owners)) != len(owners):
        raise MalformedInput("the unmasking reply's owners, kinds and shares do not match")
    if any(not isinstance(b, bytes) or len(b) != shamir.SHARE_BYTES for b in blobs):
        raise MalformedInput(f"a revealed share is not {shamir.SHARE_BYTES} bytes")
    try:
        shares = shamir.many_from_bytes(b"".join(blobs), len(blobs))
    except ValueError as err:  # an element outside the field
        raise MalformedInput(str(err)) from None
    return {int(o): (k, shares[i]) for i, (o, k) in enumerate(zip(owners, kinds, strict=True))}


def _mean_metrics(replies: list[Message]) -> dict[str, float]:
    """The num-examples-weighted mean of the scalar training metrics (sent in the clear)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for r in replies:
        metrics = r.content[METRICS]
        if NUM_EXAMPLES not in metrics:  # secagg.clear-metrics = false: nothing in the clear
            continue
        w = float(metrics[NUM_EXAMPLES])
        for k, v in metrics.items():
            if k != NUM_EXAMPLES and isinstance(v, int | float) and not isinstance(v, bool):
                sums[k] = sums.get(k, 0.0) + w * float(v)
                weights[k] = weights.get(k, 0.0) + w
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


def _error_reply(msg: Message, reason: str) -> Message:
    return Message(Error(code=_ABORTED, reason=reason), reply_to=msg)
