"""The secure-sum service: "securely sum this vector over these nodes", over the Grid.

:func:`run_protocol` runs the four stages of :mod:`privacy.secagg.protocol` as real message
exchanges with the nodes, from first messages the caller builds (a training round's, or a
query's), and returns the decoded sum and who is in it, or raises
:class:`~privacy.secagg.protocol.SecAggAbort` (with every client's reason in
:attr:`ProtocolAbort.failures`). The nodes' side is the secure-aggregation client mod
(:mod:`privacy.secagg.mod`), which masks what the node's handler computed.

:class:`SecureSum` is the service for any part of a run outside a training round (FedGCN's
pre-communication; later a k-means step, a count table): it sends each node a ``query``
message naming what to compute, and the node answers from its own data alone. Training
rounds use the same exchanges through :class:`~privacy.secagg.aggregator.SecureAggregator`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedcore.arrays import to_numpy
from fedcore.config import RunConfig
from fedcore.exchange import send_and_receive
from fedcore.keys import CONFIG, MASKED, QUERY, SECAGG, SECAGG_BITS, SECAGG_STAGE, SERVER_ROUND
from privacy.secagg import graph, shamir
from privacy.secagg.protocol import MalformedInput, PublicKeys, SecAggAbort, SecAggServer
from privacy.secagg.quantize import FixedPoint, decode, fixed_point

Observe = Callable[[Iterable[Message]], Iterator[Message]]


class ProtocolAbort(SecAggAbort):
    """A secure sum that released nothing; ``failures`` maps node ids to what became of
    each client that failed before the abort, ``stage_seconds`` times the stages run."""

    def __init__(
        self, reason: str, failures: dict[int, str], stage_seconds: dict | None = None
    ) -> None:
        super().__init__(reason)
        self.failures = failures
        self.stage_seconds = stage_seconds or {}


@dataclass
class ProtocolRun:
    """A released secure sum: the decoded ``total``, the node ids in it (``clients``), each
    one's first-stage reply (``inputs``: its metrics and keys, never its vector), what became
    of the others (``failures``) and each stage's wall time."""

    total: np.ndarray
    clients: list[int]
    inputs: dict[int, Message]
    failures: dict[int, str]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_protocol(
    grid: Grid,
    messages: list[Message],
    fp: FixedPoint,
    input_length: int,
    round_id: int,
    cfg: RunConfig,
    *,
    observe: Observe = iter,
    timeout: float | None = None,
    before_unmask: Callable[[int], None] = lambda survivors: None,
) -> ProtocolRun:
    """The protocol among the nodes ``messages`` go to. Each first message asks a node to
    compute and mask its vector (its config gets the stage and the modulus here); the later
    stages are sent as the same message type. ``observe`` sees every reply of every stage;
    ``before_unmask(survivors)`` may raise :class:`SecAggAbort` to keep the sum masked."""
    s = cfg.secagg
    kind = messages[0].metadata.message_type
    for m in messages:
        m.content[CONFIG][SECAGG_STAGE] = "train" if kind == MessageType.TRAIN else "input"
        m.content[CONFIG][SECAGG_BITS] = fp.bits
    failures: dict[int, str] = {}
    seconds: dict[str, float] = {}

    def exchange(stage: str, out: list[Message], nodes: Iterable[int]) -> dict[int, Message]:
        start = time.perf_counter()
        replies: dict[int, Message] = {}
        received = send_and_receive(grid, out, timeout, cfg.engine.poll_interval)
        # sending gave each message its id; an error the SuperLink writes for a lost node
        # comes from the SuperLink, so replies are matched by the message they answer
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in out}
        for reply in observe(received):
            node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error():
                failures[node] = f"{stage}: {reply.error.reason}"
            else:
                replies[node] = reply
        for node in nodes:
            if node not in replies and node not in failures:
                failures[node] = f"{stage}: no reply"
        seconds[stage] = time.perf_counter() - start
        return replies

    def stage(name: str, payloads: dict[int, ConfigRecord]) -> dict[int, Message]:
        out = [_stage_message(node, round_id, name, p, kind) for node, p in payloads.items()]
        return exchange(name, out, payloads)

    first = "train" if kind == MessageType.TRAIN else "input"
    trained = exchange(first, messages, [m.metadata.dst_node_id for m in messages])
    nodes = sorted(trained)
    ids = {node: i + 1 for i, node in enumerate(nodes)}  # protocol ids: 1..n
    node_of = {i: node for node, i in ids.items()}
    degree = None if s.mode != "sparse" else (s.degree or graph.default_degree(len(nodes)))
    server = SecAggServer(
        round_id,
        fp,
        s.threshold,
        degree,
        seed=cfg.seed,
        input_length=input_length,
        insecure_demo=s.insecure_demo,
    )
    try:
        parsed = _parsed(trained, _public_keys, first, failures)
        neighbours = server.collect_keys({ids[n]: k for n, k in parsed.items()})
        keys = server.roster
        shared = stage(
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
        masked = stage(
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
        before_unmask(len(survivors))
        revealed = stage(
            "unmask",
            {node_of[i]: ConfigRecord({"survivors": sorted(survivors)}) for i in survivors},
        )
        shares = _parsed(revealed, _shares, "unmask", failures)
        total = decode(server.unmask({ids[n]: v for n, v in shares.items()}), fp)
    except SecAggAbort as err:  # anything else is a bug: its traceback reaches the log
        for i, why in server.dropped.items():  # dropped before the abort: said so, too
            failures.setdefault(node_of[i], why)
        raise ProtocolAbort(str(err), failures, seconds) from None
    for i, why in server.dropped.items():
        failures[node_of[i]] = why
    in_sum = [node_of[i] for i in sorted(server.u3)]
    return ProtocolRun(total, in_sum, {n: trained[n] for n in in_sum}, failures, seconds)


class SecureSum:
    """Securely sums, over the nodes of the Grid, a vector each node computes itself.

    ``__call__`` sends every node a ``query`` message naming the computation (the node's
    ClientApp answers it from its own data; the mod masks the answer) and returns the
    :class:`ProtocolRun`, or raises :class:`ProtocolAbort`. The protocol's settings are the
    run's ``secagg`` section (``mode = "off"`` runs the complete graph: a query that asks for a
    secure sum always gets one).
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(
        self,
        grid: Grid,
        nodes: list[int],
        query: str,
        length: int,
        bound: float,
        frac_bits: int,
        *,
        round_id: int = 0,
        observe: Observe = iter,
        timeout: float | None = None,
    ) -> ProtocolRun:
        """The sum of the ``length`` vectors that ``query`` asks of ``nodes``, every entry
        within ``bound``, encoded with ``frac_bits`` fraction bits for a sum of all of them."""
        if not nodes:
            raise ProtocolAbort(f"{query}: no node to sum over", {})
        try:
            fp = fixed_point(len(nodes), bound, frac_bits)
        except ValueError as err:
            raise ProtocolAbort(f"{query}: cannot encode the sum: {err}", {}) from None
        messages = [
            Message(
                RecordDict({CONFIG: ConfigRecord({SERVER_ROUND: round_id, QUERY: query})}),
                dst_node_id=node,
                message_type=MessageType.QUERY,
            )
            for node in nodes
        ]
        return run_protocol(
            grid, messages, fp, length, round_id, self.cfg, observe=observe, timeout=timeout
        )


def _stage_message(
    node: int, round_id: int, stage: str, payload: ConfigRecord, kind: str
) -> Message:
    config = ConfigRecord({SERVER_ROUND: round_id, SECAGG_STAGE: stage})
    return Message(
        RecordDict({CONFIG: config, SECAGG: payload}), dst_node_id=node, message_type=kind
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
    return to_numpy(record[MASKED])  # a read-only view: the server only adds it up


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
