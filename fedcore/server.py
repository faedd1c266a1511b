"""The server side of a run: the round loop over a strategy's five verbs, with measurements.

It follows the shape of Flower's ``Strategy.start`` (configure -> send -> aggregate, for train
then evaluate, then central evaluation), and adds what a run must record each round: client
failures, payload bytes, wall time and peak memory, handed to ``on_round`` as one record.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedcore import seeding
from fedcore.arrays import load_into, to_record
from fedcore.config import RunConfig
from fedcore.exchange import send_and_receive
from fedcore.keys import ACCURACY, DP_EVENT
from fedcore.tasks import get_task
from privacy.secagg.aggregator import SecureAggregator
from strategies import build_strategy

RoundRecord = dict[str, object]


@dataclass
class Traffic:
    """What crossed the wire in a round: array payload bytes each way, and the DP events
    that clients report having applied (the raw material of the privacy ledger)."""

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
                event = reply.content.config_records.get(DP_EVENT)
                if event is not None:
                    self.dp_events.append(dict(event))
            yield reply


def _payload_bytes(msg: Message) -> int:
    """Bytes of arrays and of byte strings (keys, ciphertexts) in a message's records."""
    total = sum(len(a.data) for rec in msg.content.array_records.values() for a in rec.values())
    for rec in msg.content.config_records.values():
        for value in rec.values():
            if isinstance(value, bytes):
                total += len(value)
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                total += sum(len(v) for v in value)
    return total


def peak_memory_mb() -> float:
    """Peak resident memory of this process plus its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def run_server(
    grid: Grid,
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None] | None = None,
    timeout: float | None = None,
) -> ArrayRecord:
    """Run ``cfg.train.rounds`` rounds on ``grid`` and return the final global model
    (``timeout``: seconds each exchange waits for replies; default ``engine.timeout``)."""
    if timeout is None:
        timeout = cfg.engine.timeout or None
    poll = cfg.engine.poll_interval
    task = get_task(cfg.task)
    data = task.load_data(cfg)
    model = task.build_model(cfg, data, seeding.torch_generator(cfg.seed, seeding.MODEL_INIT))
    arrays = to_record(model.state_dict())
    strategy = build_strategy(cfg)
    guard = getattr(strategy, "check_release", None)  # distributed DP's noise floor
    secure = SecureAggregator(cfg, guard) if cfg.secagg.mode != "off" else None
    for server_round in range(1, cfg.train.rounds + 1):
        start = time.perf_counter()
        traffic = Traffic()
        record: RoundRecord = {"round": server_round}

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
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        record["train-clients"] = len(messages)
        record["train-failures"] = list(strategy.last_failures)
        traffic.dp_events.extend(getattr(strategy, "last_dp_events", []))  # server-side DP
        if getattr(strategy, "stop_reason", None):
            record["stopped"] = strategy.stop_reason
        if new_arrays is not None:
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

        if cfg.evaluate.server:
            load_into(model, arrays)
            record["server-eval"] = task.evaluate(model, data.x_test, data.y_test)
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
        if _reached(cfg, record) or "stopped" in record:
            break
    return arrays


def _reached(cfg: RunConfig, record: RoundRecord) -> bool:
    target = cfg.train.target_accuracy
    server = record.get("server-eval") or {}
    return target > 0 and server.get(ACCURACY, 0.0) >= target


def final_model(cfg: RunConfig, arrays: ArrayRecord) -> torch.nn.Module:
    """A model of the task holding ``arrays`` (for saving or further evaluation)."""
    task = get_task(cfg.task)
    model = task.build_model(cfg, task.load_data(cfg), torch.Generator().manual_seed(0))
    load_into(model, arrays)
    return model
