"""The client side of secure aggregation over Flower: one mod around the ClientApp.

The server runs four message exchanges per round, all of type ``train`` with the stage in the
config record (``secagg-stage``):

- ``train``: the mod lets the ClientApp compute the round's statistics, then keeps what it
  will mask (the handler's wire vector, clipped and weighted already, plus under distributed
  DP this client's share of the noise) encoded in fixed point in the node's
  ``Context.state``, and replies with the training metrics and its public keys instead.
- ``share-keys``, ``masked-input``, ``unmask``: the mod answers from the protocol state in
  ``Context.state`` without calling the ClientApp.

A plain training message while secure aggregation is on is refused: the client never sends
an unmasked update because a server forgot to ask for masking.

The secure-sum service (:mod:`privacy.secagg.service`) runs the same stages as ``query``
messages, whatever ``secagg.mode`` is: at the ``input`` stage the mod lets the ClientApp's
query handler compute the node's vector (its wire record says the vector's bound and
fraction bits) and masks that. A query handler's vector never leaves the node unmasked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcore import seeding
from fedcore.arrays import from_numpy, to_numpy
from fedcore.config import RunConfig
from fedcore.keys import (
    ARRAYS,
    CONFIG,
    DATA_PATH,
    DP_EVENT,
    MASKED,
    METRICS,
    PARTITION_ID,
    SECAGG,
    SECAGG_BITS,
    SECAGG_INPUT,
    SECAGG_MASKING,
    SECAGG_STAGE,
    SECAGG_STATE,
    SERVER_ROUND,
    STATISTICS,
    WIRE,
)
from privacy.plan import dp_plan
from privacy.secagg import shamir
from privacy.secagg.encoding import encoding_bits, statistics_bound
from privacy.secagg.protocol import PublicKeys, SecAggClient, client_from_state, client_state
from privacy.secagg.quantize import FixedPoint, encode


class SecAggClientError(ValueError):
    """A secure-aggregation message this client cannot or must not answer."""


def fixed_point_of(cfg: RunConfig, bits: int, spec_bound: float) -> FixedPoint:
    """The round's encoding: the server picks the modulus for the cohort it sampled; the
    range is the statistics' spec bound, widened for distributed DP's noise."""
    bound = statistics_bound(spec_bound, cfg)
    frac_bits, smallest = encoding_bits(cfg, bound)
    if bits not in (16, 32, 64) or bits < smallest:
        raise SecAggClientError(f"modulus of 2^{bits} is not supported for this run's encoding")
    return FixedPoint(bound, frac_bits, bits)


def secagg_mod(resolve: Callable[[Context], RunConfig]) -> Mod:
    """The client mod of secure aggregation, for the run config ``resolve`` returns."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        cfg = resolve(context)
        config = msg.content.config_records.get(CONFIG, ConfigRecord())
        stage = config.get(SECAGG_STAGE)
        kind = msg.metadata.message_type
        query = kind == MessageType.QUERY and stage is not None  # the secure-sum service
        if not query and (cfg.secagg.mode == "off" or kind != MessageType.TRAIN):
            return call_next(msg, context)
        if cfg.secagg.insecure_demo and DATA_PATH in context.node_config:
            # Flower tells a ClientApp nothing about its runtime; a node with its own data file
            # is a deployed SuperNode (simulated nodes read partitions of the run's dataset)
            raise SecAggClientError(
                "secagg.insecure-demo = true is refused on a deployed node (node config "
                f"{DATA_PATH!r}): it lifts the security floor of secure aggregation"
            )
        if stage == ("input" if query else "train"):
            return _input(msg, context, call_next, cfg, config)
        if stage not in ("share-keys", "masked-input", "unmask"):
            raise SecAggClientError(
                "secure aggregation is on but the message asks for no secure-aggregation "
                f"stage ({SECAGG_STAGE}={stage!r}); refusing to send an unmasked update"
            )
        record = context.state.config_records.get(SECAGG_STATE)
        if (
            record is None
            or int(record["round"]) != int(config.get(SERVER_ROUND, -1))
            or record.get("kind", MessageType.TRAIN) != kind
        ):
            raise SecAggClientError(f"stage {stage!r} without a {kind} input stage this round")
        client = client_from_state(record["client"])
        payload = msg.content.config_records.get(SECAGG, ConfigRecord())
        if stage == "share-keys":
            reply = _share_keys(client, payload)
        elif stage == "masked-input":
            reply = _masked_input(client, payload, context)
        else:
            reply = _unmask(client, payload)
        context.state[SECAGG_STATE] = _state_record(client, kind)
        return Message(reply, reply_to=msg)

    return mod


def _input(
    msg: Message, context: Context, call_next: ClientAppCallable, cfg: RunConfig, config
) -> Message:
    """The first stage: the ClientApp computes (trains, or answers the query), the mod keeps
    the encoded vector in ``Context.state`` and replies with the public keys instead."""
    kind = msg.metadata.message_type
    round_id = int(config[SERVER_ROUND])
    if kind == MessageType.QUERY:  # the query handler computes only what this mod masks
        context.state[SECAGG_MASKING] = ConfigRecord({"round": round_id})
    try:
        reply = call_next(msg, context)
    finally:
        if SECAGG_MASKING in context.state:
            del context.state[SECAGG_MASKING]
    if reply.has_error():
        return reply
    pid = int(context.node_config[PARTITION_ID])
    wire = reply.content.config_records.get(WIRE)
    metrics = reply.content.metric_records.get(METRICS, MetricRecord())
    trained = reply.content.array_records.get(ARRAYS, ArrayRecord())
    if kind == MessageType.QUERY:  # the handler's vector, in the range it states
        if wire is None or STATISTICS not in trained:
            raise SecAggClientError("the query handler replied with no vector to mask")
        x = np.asarray(to_numpy(trained[STATISTICS]), np.float64)  # encode copies it
        fp = _query_fixed_point(int(config[SECAGG_BITS]), wire)
    else:
        x, fp = _training_input(reply, cfg, config, pid)
    rng = seeding.numpy_rng(cfg.seed, seeding.SECAGG, round_id, pid)
    try:  # a diverged (non-finite) update is refused here, not masked as garbage
        encoded = encode(x, fp, rng)
    except ValueError as err:
        raise SecAggClientError(f"cannot mask this update: {err}") from None
    client = SecAggClient(0, round_id, fp, cfg.secagg.threshold, cfg.secagg.insecure_demo)
    context.state[SECAGG_INPUT] = ArrayRecord({"x": from_numpy(encoded)})
    context.state[SECAGG_STATE] = _state_record(client, kind)
    keys = client.advertise()
    content = RecordDict(
        {
            # in the clear beside the masked update, unless the run asks for none: the
            # number of examples reaches the server anyway, masked, as the update's weight
            METRICS: metrics if cfg.secagg.clear_metrics else MetricRecord(),
            SECAGG: ConfigRecord(
                {"channel": keys.channel, "mask": keys.mask, "seed-hash": keys.seed_hash}
            ),
        }
    )
    if DP_EVENT in reply.content.config_records:
        content[DP_EVENT] = reply.content[DP_EVENT]
    return Message(content, reply_to=msg)


def _query_fixed_point(bits: int, wire: ConfigRecord) -> FixedPoint:
    """A query's encoding: the range and precision its handler states, the modulus the
    server picked for the number of nodes it asked."""
    if bits not in (32, 64):
        raise SecAggClientError(f"modulus of 2^{bits} is not supported")
    try:
        return FixedPoint(float(wire["bound"]), int(wire["frac-bits"]), bits)
    except (KeyError, TypeError, ValueError) as err:
        raise SecAggClientError(f"the query handler's wire record is unusable: {err}") from None


def _training_input(
    reply: Message, cfg: RunConfig, config, pid: int
) -> tuple[np.ndarray, FixedPoint]:
    """What a training round masks, before encoding: the handler's wire vector (clipped and
    weighted already), plus this client's share of distributed DP's noise."""
    trained = reply.content.array_records.get(ARRAYS, ArrayRecord())
    wire = reply.content.config_records.get(WIRE)
    if wire is None or STATISTICS not in trained:
        raise SecAggClientError("the training handler replied with no wire vector to mask")
    update = np.array(to_numpy(trained[STATISTICS]), np.float64)
    fp = fixed_point_of(cfg, int(config[SECAGG_BITS]), float(wire["bound"]))
    if cfg.privacy.dp == "distributed":  # this client's share of the round's noise
        std = dp_plan(cfg).client_noise_std(cfg.privacy.clip_norm)
        server_round = int(config[SERVER_ROUND])
        noise = seeding.noise_rng(cfg.privacy.seeded_noise, cfg.seed, server_round, pid)
        update = update + noise.normal(0.0, std, update.shape)
    return update, fp


def _state_record(client: SecAggClient, kind: str) -> ConfigRecord:
    return ConfigRecord({"round": client.round_id, "kind": kind, "client": client_state(client)})


def _share_keys(client: SecAggClient, payload: ConfigRecord) -> RecordDict:
    roster = {
        int(i): PublicKeys(c, s, h)
        for i, c, s, h in zip(
            payload["roster-ids"],
            payload["roster-channel"],
            payload["roster-mask"],
            payload["roster-seed-hash"],
            strict=True,
        )
    }
    out = client.share_keys(roster, [int(v) for v in payload["neighbours"]], int(payload["me"]))
    receivers = sorted(out)
    return RecordDict(
        {SECAGG: ConfigRecord({"to": receivers, "ciphertexts": [out[v] for v in receivers]})}
    )


def _masked_input(client: SecAggClient, payload: ConfigRecord, context: Context) -> RecordDict:
    senders = [int(u) for u in payload.get("from", [])]
    inbox = dict(zip(senders, payload.get("ciphertexts", []), strict=True))
    y = client.masked_input(to_numpy(context.state[SECAGG_INPUT]["x"]), inbox)
    del context.state[SECAGG_INPUT]  # nothing of the plain update outlives the round
    return RecordDict({SECAGG: ArrayRecord({MASKED: Array(y)})})


def _unmask(client: SecAggClient, payload: ConfigRecord) -> RecordDict:
    shares = client.unmask({int(u) for u in payload["survivors"]})
    owners = sorted(shares)
    return RecordDict(
        {
            SECAGG: ConfigRecord(
                {
                    "owners": owners,
                    "kinds": [shares[o][0] for o in owners],
                    "shares": [shamir.to_bytes(shares[o][1]) for o in owners],
                }
            )
        }
    )
