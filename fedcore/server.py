"""The server side of a run: the round loop over a strategy's five verbs, with measurements.

It follows the shape of Flower's ``Strategy.start`` (configure -> send -> aggregate, for train
then evaluate, then central evaluation), and adds what a run must record each round: what
became of it (``status``: aggregated, aborted with a ``reason``, or empty), client failures,
payload bytes, wall time and peak memory, handed to ``on_round`` as one record.

A run that did nothing did not succeed: :class:`FailurePolicy` reads the rounds' statuses and
raises :class:`RunFailed` when no round aggregated, when ``train.max-failed-rounds`` rounds in
a row aborted, or when the aggregated model went non-finite.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.serde import message_to_proto, metadata_to_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcore import seeding
from fedcore.arrays import to_numpy, to_numpy_dict, to_record
from fedcore.checkpoint import Checkpoint
from fedcore.config import RunConfig
from fedcore.exchange import send_and_receive
from fedcore.keys import ACCURACY, BUDGET_DECLINE, DP_EVENT, DP_EVENT_JSON
from fedcore.setup_round import SetupFailed, run_setup
from fedcore.tasks import Algorithm, ServerData, checked_task, get_algorithm, server_data
from privacy.accounting import epsilon
from privacy.ledger import DpEvent
from privacy.report.audit import CLIENT_UNIT
from privacy.secagg.aggregator import SecureAggregator, SecureSumReply
from strategies import build_strategy

RoundRecord = dict[str, object]

# in a checkpoint's strategy state: the run ended after this round (target accuracy, budget,
# an algorithm at its final state), so a resumed run only finishes it
ENDED = "run-ended"

# What became of a round (its record's "status"): the model took >= 1 client update; clients
# were sampled but no update was aggregated (the record's "reason" says why); nobody was asked.
AGGREGATED, ABORTED, EMPTY = "aggregated", "aborted", "empty"
STATUSES = (AGGREGATED, ABORTED, EMPTY)


class RunFailed(RuntimeError):
    """The run produced nothing to present: no round aggregated a client update, too many
    rounds in a row aborted, or the model went non-finite. The message says which, and why."""


@dataclass
class FailurePolicy:
    """The verdict on a run from its rounds' records (``status``, ``reason``, ``non-finite``).

    :meth:`observe` each round as it ends and :meth:`finish` once the loop is over; both raise
    :class:`RunFailed` with the reason. An empty round (nobody sampled, which Poisson sampling
    does by design, or a strategy that stopped) neither counts as a failure nor ends a streak.

    Args:
        max_failed_rounds: aborted rounds in a row that fail the run (0: no limit; the run
            still fails if no round at all aggregated).
    """

    max_failed_rounds: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    _streak: list[RoundRecord] = field(default_factory=list)
    _first_unaggregated: RoundRecord | None = None

    def observe(self, record: RoundRecord) -> None:
        status = record["status"]
        self.counts[status] += 1
        if record.get("non-finite"):
            raise RunFailed(
                f"the global model went non-finite in round {record['round']}: {record['reason']}"
            )
        if status == AGGREGATED:
            self._streak = []
            return
        if self._first_unaggregated is None or (
            status == ABORTED and self._first_unaggregated["status"] != ABORTED
        ):
            self._first_unaggregated = record
        if status == ABORTED:
            self._streak.append(record)
        n = self.max_failed_rounds
        if n > 0 and len(self._streak) >= n:
            first, last = self._streak[0]["round"], self._streak[-1]["round"]
            raise RunFailed(
                f"{n} rounds in a row aggregated no client update (rounds {first}-{last}, "
                f"train.max-failed-rounds = {n}); round {last}: {self._streak[-1]['reason']}"
            )

    def finish(self) -> None:
        if self.counts[AGGREGATED] > 0:
            return
        c, first = self.counts, self._first_unaggregated
        detail = f"; round {first['round']}: {first['reason']}" if first is not None else ""
        raise RunFailed(
            f"no round aggregated a client update ({c[ABORTED]} aborted, {c[EMPTY]} empty)" + detail
        )


class _Tally:
    """The train replies the strategy reads, counted as it reads them: clients in replies
    without an error (a secure sum stands for the clients in it) and error replies."""

    def __init__(self, replies: Iterable[Message]) -> None:
        self._replies = replies
        self.clients = self.errors = self.replies = 0
        self.secure = False

    def __iter__(self) -> Iterator[Message]:
        self.clients = self.errors = self.replies = 0  # a list read twice is counted once
        for reply in self._replies:
            self.replies += 1
            if reply.has_error():
                self.errors += 1
            elif isinstance(reply, SecureSumReply):
                self.clients += len(reply.clients)
                self.secure = True
            else:
                self.clients += 1
            yield reply


@dataclass
class Traffic:
    """What crossed the wire in a round: serialized message bytes each way (``sent``: the
    downlink, ``received``: the uplink), and the DP events that clients report having
    applied (the raw material of the privacy ledger)."""

    cfg: RunConfig  # with the round: what a reported event must fit
    server_round: int
    sent: int = 0
    received: int = 0
    dp_events: list[dict] = field(default_factory=list)

    def count_sent(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self.sent += sum(_payload_bytes(m) for m in messages)
        return messages

    def count_received(self, replies: Iterable[Message]) -> Iterator[Message]:
        for reply in replies:  # a generator, so streaming aggregation stays streaming
            if not reply.has_error():
                self.received += _payload_bytes(reply)
                record = reply.content.config_records.get(DP_EVENT)
                if record is not None:
                    event = _reported_event(record, self.cfg, self.server_round)
                    if isinstance(event, str):  # dropped like a failed reply, and said so
                        node = reply.metadata.src_node_id
                        log(WARNING, "node %s: reply dropped: malformed DP event: %s", node, event)
                        continue
                    self.dp_events.append(event)
            yield reply


def _reported_event(record: ConfigRecord, cfg: RunConfig, server_round: int) -> dict | str:
    """The DP event a client reports it applied, validated before it can reach the run's
    ledger, or why it is not one: well formed, a client's own event of this round for the
    unit the run's DP mode protects, and one the run's accountant can compose (else the
    report of the run, which reads every event, would fail)."""
    try:
        event = DpEvent.from_json(str(record[DP_EVENT_JSON]))
    except (KeyError, ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    p = cfg.privacy
    unit = CLIENT_UNIT.get(p.dp)
    if event.client is None or event.round != server_round or event.neighbouring != unit:
        return (
            f"client {event.client}, round {event.round}, unit {event.neighbouring!r}: a "
            f"client's event of round {server_round} protects unit {unit!r} under "
            f"privacy.dp = {p.dp!r}"
        )
    try:
        epsilon([event], p.delta, p.accountant)
    except (ValueError, TypeError, ArithmeticError, NotImplementedError) as err:
        return f"the {p.accountant} accountant cannot compose it: {err}"
    return event.to_dict()


# array bytes up to which a message is serialized whole to count it: serializing copies
# every array (4.6 ms for an 800 KB MLP update, 0.42 ms for the rest alone); at 10,000
# clients a round, 1 MB here made a round of the 784-200-200-10 MLP 52.7 s, 64 KiB 44.4 s
_EXACT_UP_TO = 1 << 16


def _payload_bytes(msg: Message) -> int:
    """The bytes of ``msg`` as Flower puts it on the wire: its protobuf serialization
    (records, metadata), not the lengths of its arrays. Serializing copies every array, so a
    message with more than 64 KiB of arrays is counted as its arrays' bytes plus everything
    else serialized (its arrays without their data): within a few bytes per array of the
    whole (nested length prefixes; 24 bytes of 798,000 for the MLP's update)."""
    arrays = [a for record in msg.content.array_records.values() for a in record.values()]
    payload = sum(len(a.data) for a in arrays)
    if payload <= _EXACT_UP_TO:
        return message_to_proto(msg).ByteSize()
    stripped = RecordDict(
        {
            name: ArrayRecord(
                {
                    k: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=b"")
                    for k, a in r.items()
                }
            )
            if isinstance(r, ArrayRecord)
            else r
            for name, r in msg.content.items()
        }
    )
    rest = recorddict_to_proto(stripped).ByteSize() + metadata_to_proto(msg.metadata).ByteSize()
    # each array's data field: its bytes, a tag byte and a varint length
    return rest + payload + sum(1 + _varint_size(len(a.data)) for a in arrays)


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


@dataclass(frozen=True)
class ServerState:
    """The server's state after a completed round: what a checkpoint keeps of it (the
    nodes' states are the engine's, :mod:`fedcore.checkpoint`)."""

    round: int
    arrays: ArrayRecord
    strategy: dict[str, object]

    @classmethod
    def of(cls, ckpt: Checkpoint | None) -> ServerState | None:
        """The state a run resumed from ``ckpt`` starts from (None: a fresh run)."""
        if ckpt is None:
            return None
        return cls(ckpt.round, to_record(ckpt.arrays), ckpt.strategy)


def run_server(
    grid: Grid,
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None] | None = None,
    timeout: float | None = None,
    *,
    start: ServerState | None = None,
    on_state: Callable[[ServerState], None] | None = None,
    on_release: Callable[[int, list[dict]], None] | None = None,
) -> ArrayRecord:
    """Run ``cfg.train.rounds`` rounds on ``grid`` and return the final global model
    (``timeout``: seconds each exchange waits for replies; default ``engine.timeout``).

    ``start``: continue after ``start.round`` from that state (a resumed run: the task's
    setup ran before it, and the nodes hold its release). ``on_state`` is called after each
    round's ``on_round`` with the state a checkpoint keeps. ``on_release(round, events)``
    is called with the round's DP events as soon as the round has aggregated, before its
    noised model goes anywhere (client evaluation), so a ledger can hold them before they
    are seen; the round's record carries them too."""
    if timeout is None:
        timeout = cfg.engine.timeout or None
    poll = cfg.engine.poll_interval
    task = checked_task(cfg)
    arrays, evaluate = _global_state(task, cfg, server_data(task, cfg))
    strategy = build_strategy(cfg)
    first = 1
    if start is not None:
        if list(start.arrays.keys()) != list(arrays.keys()):
            raise ValueError(
                f"the checkpoint's global state has arrays {list(start.arrays.keys())}, this "
                f"run's algorithm {list(arrays.keys())}"
            )
        arrays, first = start.arrays, start.round + 1
        if start.strategy.get(ENDED):  # it stopped there (target, budget, finished)
            return arrays
        strategy.load_state(start.strategy)
    secure = None
    if cfg.secagg.mode != "off":  # the guard: distributed DP's noise floor and the budget
        secure = SecureAggregator(cfg, strategy.sum_format(), strategy.check_release)
        secure.check_encoding(arrays)
    setup = Traffic(cfg, 0)  # round 0: the task's setup, recorded with round 1
    setup_record = None
    if first == 1 and task.setup is not None and task.setup.needed(cfg):
        try:
            setup_record = run_setup(
                grid, cfg, task.setup, observe=setup.count_received, timeout=timeout
            )
        except SetupFailed as err:
            raise RunFailed(str(err)) from None
        setup.dp_events.extend(e.to_dict() for e in task.setup.events(cfg))
    for server_round in range(first, cfg.train.rounds + 1):
        start = time.perf_counter()
        traffic = Traffic(cfg, server_round)
        record: RoundRecord = {"round": server_round, "status": EMPTY}
        if server_round == 1 and setup_record is not None:
            record["setup"] = setup_record
            traffic.received, traffic.dp_events = setup.received, list(setup.dp_events)

        messages = traffic.count_sent(
            strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        )
        if secure is None:
            replies = traffic.count_received(send_and_receive(grid, messages, timeout, poll))
        else:  # every stage's replies pass through traffic; the strategy sees the sum
            replies = secure.send_and_receive(
                grid, messages, arrays, server_round, traffic.count_received, timeout
            )
            record["secagg-seconds"] = dict(secure.last_stage_seconds)
        tally = _Tally(replies)
        new_arrays, train_metrics = strategy.aggregate_train(server_round, tally)
        record["train-clients"] = len(messages)
        record["train-failures"] = list(strategy.last_failures)
        traffic.dp_events.extend(strategy.last_dp_events)  # server-side DP
        if on_release is not None and traffic.dp_events:
            on_release(server_round, list(traffic.dp_events))
        if strategy.stop_reason:
            record["stopped"] = strategy.stop_reason
        record.update(_round_status(record, tally, new_arrays))
        if secure is not None and secure.last_abort and record["status"] == ABORTED:
            record["reason"] = secure.last_abort  # the protocol's cause, not "n of n failed"
        if record.get("non-finite"):  # never adopted; a later round would build on it
            record["stopped"] = record["reason"]
        elif new_arrays is not None:
            arrays = new_arrays
        record["train"] = dict(train_metrics or {})

        messages = traffic.count_sent(
            strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
        )
        if messages:
            eval_metrics = strategy.aggregate_evaluate(
                server_round,
                traffic.count_received(send_and_receive(grid, messages, timeout, poll)),
            )
            record["client-eval"] = dict(eval_metrics or {})
            record["eval-failures"] = list(strategy.last_failures)

        if cfg.evaluate.server and evaluate is not None:
            record["server-eval"] = evaluate(arrays)
        record.update(
            {
                "seconds": time.perf_counter() - start,
                "bytes-sent": traffic.sent,
                "bytes-received": traffic.received,
                "peak-memory-mb": peak_memory_mb(),
                "privacy-events": traffic.dp_events,
            }
        )
        if on_round is not None:
            on_round(record)
        ended = _reached(cfg, record) or "stopped" in record
        if on_state is not None:  # a run that ended early stays ended when resumed
            on_state(ServerState(server_round, arrays, {**strategy.state(), ENDED: ended}))
        if ended:
            break
    return arrays


def _global_state(
    algorithm: Algorithm, cfg: RunConfig, data: ServerData
) -> tuple[ArrayRecord, Callable[[ArrayRecord], dict] | None]:
    """The algorithm's first global state and the server's evaluation of a state on the
    held-out test set (None if there is none to evaluate on)."""
    state = algorithm.init(cfg, data, seeding.numpy_rng(cfg.seed, seeding.MODEL_INIT))
    if algorithm.evaluate is None or data.x_test is None:
        return to_record(state), None
    return to_record(state), lambda a: algorithm.evaluate(
        to_numpy_dict(a), data.x_test, data.y_test, cfg
    )


def _round_status(
    record: RoundRecord, tally: _Tally, new_arrays: ArrayRecord | None
) -> RoundRecord:
    """``status``, ``aggregated-clients`` and, unless aggregated, ``reason`` of a round."""
    sent, failures = int(record["train-clients"]), list(record["train-failures"])
    # failures = the error replies + the replies the strategy rejected (malformed, not finite,
    # too long); under secure aggregation the one reply without an error is the sum
    rejected = len(failures) - tally.errors
    clients = 0 if tally.secure and rejected > 0 else max(0, tally.clients - rejected)
    if new_arrays is not None and clients > 0:
        bad = [k for k, a in new_arrays.items() if not np.isfinite(to_numpy(a)).all()]
        if bad:
            return {
                "status": ABORTED,
                "aggregated-clients": clients,
                "non-finite": True,
                "reason": f"the aggregated model is not finite (arrays {', '.join(bad)}); "
                "not adopted",
            }
        return {"status": AGGREGATED, "aggregated-clients": clients}
    if sent == 0:
        reason = str(record.get("stopped") or "no client was sampled")
        return {"status": EMPTY, "aggregated-clients": 0, "reason": reason}
    if failures and all(BUDGET_DECLINE in f for f in failures):
        # every sampled client declined at its privacy budget: a budget spent as planned, not
        # a failure (a client's word only turns its own failure into a skipped round)
        reason = f"all {sent} sampled clients declined: {BUDGET_DECLINE}"
        return {"status": EMPTY, "aggregated-clients": 0, "reason": reason}
    if failures:
        reason = f"{len(failures)} of {sent} sampled clients failed (first: {failures[0]})"
    elif tally.replies < sent:
        reason = f"{sent - tally.replies} of {sent} sampled clients did not reply"
    else:
        reason = "the strategy aggregated none of the replies"
    return {"status": ABORTED, "aggregated-clients": 0, "reason": reason}


def _reached(cfg: RunConfig, record: RoundRecord) -> bool:
    target = cfg.train.target_accuracy
    server = record.get("server-eval") or {}
    return target > 0 and server.get(ACCURACY, 0.0) >= target


def final_state(cfg: RunConfig, arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """What a run saves as ``model.pt``: the global state the clients see (a model task's
    state dict), without the algorithm's server-only arrays (an optimizer's buffers)."""
    state = get_algorithm(cfg.task).client_state(arrays)
    return {k: torch.from_numpy(to_numpy(a).copy()) for k, a in state.items()}
