"""The client hook of an algorithm on typed statistics, and the client's privacy layers.

The node runs the algorithm's client hook on its own data, turns the statistics into their
wire vector (:func:`fedcore.statistics.contribution`: checked against the spec, reals clipped,
weights applied) and then applies, in this order, what the run's privacy settings ask for:

- sample-level DP (``sample``, ``sample-distributed``; an algorithm with ``dp_sgd``): the
  hook trains with the DP-SGD the node sets up (``RoundContext.example_dp``), recorded in
  the node's ledger; the statistics keep their example-count weights;
- client-level DP (``client``, ``distributed``, ``local``): clip the wire vector's L2 norm to
  ``privacy.clip-norm`` (the sensitivity of the sum to one client), or under adaptive
  clipping to the round's norm the server sent, and say whether it clipped (its norm bit);
- local DP: add the Gaussian noise here, record it in the node's ledger;
- distributed DP: the secure-aggregation mod adds this client's noise share and masks.

The reply is the wire vector (``statistics``) and, outside DP, the hook's metrics.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from clients import privacy
from clients.handlers import ClientInputError, client_data, client_mechanism, message_config
from clients.policy import node_policy
from fedcore import seeding
from fedcore.arrays import from_numpy, to_numpy, to_numpy_dict
from fedcore.config import CLIENT_LEVEL_DP, RunConfig
from fedcore.keys import (
    ARRAYS,
    CLIP_NORM,
    COMPRESSED,
    DP_EVENT,
    EPSILON,
    LOCAL_MODEL,
    METRICS,
    NORM_BIT,
    NUM_EXAMPLES,
    RESIDUAL,
    SERVER_ROUND,
    STATISTICS,
    WIRE,
)
from fedcore.statistics import Spec, StatisticsError, clip_l2, contribution
from fedcore.tasks import Algorithm, ExampleDp, RoundContext
from privacy.mechanisms import add_gaussian
from privacy.secagg.encoding import to_encoding, wire_bound


def handle_statistics(msg: Message, context: Context, cfg: RunConfig, algo: Algorithm) -> Message:
    """Run ``algo``'s client hook on this node's partition and reply with its wire vector."""
    policy = node_policy(context)
    policy.enforce(cfg)
    data, pid = client_data(context, cfg)
    state = received_state(msg)
    server_round = int(message_config(msg).get(SERVER_ROUND, 0))
    try:
        spec = algo.spec(cfg, state)
    except (KeyError, ValueError) as err:
        raise ClientInputError(f"the global state does not fit {algo.name!r}: {err}") from None
    p = cfg.privacy
    event = client_mechanism(cfg, algo, data, cfg.train.local_epochs, server_round, pid)
    ledger, example_dp = None, None
    if event is not None:
        policy.check_noise(event.noise_multiplier)
        ledger = privacy.load_ledger(context)
        privacy.check_budget(cfg, ledger, event, policy.max_epsilon)  # before data is touched
    if event is not None and event.mechanism == "dp-sgd":
        noise = (p.seeded_noise, cfg.seed, server_round, pid)
        example_dp = ExampleDp(
            privacy.dp_sgd_params(cfg, data.num_train),
            seeding.batch_generator(*noise),
            seeding.noise_generator(*noise),
        )
    rng = seeding.numpy_rng(cfg.seed, seeding.CLIENT_TRAIN, server_round, pid)
    context_ = RoundContext(cfg, server_round, pid, _local(context), example_dp)
    stats, metrics = algo.client(state, data, context_, rng)
    if context_.local:  # what never leaves the node
        context.state[LOCAL_MODEL] = ArrayRecord(
            {k: from_numpy(np.asarray(v)) for k, v in context_.local.items()}
        )
    try:
        wire = contribution(stats, spec)
    except StatisticsError as err:
        raise ClientInputError(f"{algo.name!r} computed bad statistics: {err}") from None
    if p.dp == "off":
        reply_metrics = {NUM_EXAMPLES: data.num_train, **metrics}
        return _reply(msg, wire, spec, cfg, algo, reply_metrics, {}, context, pid)
    extra, bit = {}, {}
    if p.dp in CLIENT_LEVEL_DP and (p.dp != "client" or p.clipping == "client"):
        clip = _round_clip(msg, cfg)
        if p.adaptive:
            bit = {NORM_BIT: int(float(np.linalg.norm(wire)) > clip)}
        wire = clip_l2(wire, clip)
    if event is not None:
        if p.dp == "local":
            noise = seeding.noise_rng(p.seeded_noise, cfg.seed, server_round, pid)
            wire = add_gaussian(wire, event.noise_multiplier * p.clip_norm, noise)
        ledger = ledger.record(event)
        privacy.save_ledger(context, ledger)
        extra[DP_EVENT] = privacy.event_record(event)
        metrics = {EPSILON: privacy.spent(cfg, ledger)}
    else:
        metrics = {}  # nothing noises the hook's metrics, nor the number of examples
    # (DP-SGD's accounting takes the number of examples as public; client-level DP hides it)
    count = 1 if p.dp in CLIENT_LEVEL_DP else data.num_train
    reply_metrics = {NUM_EXAMPLES: count, **metrics, **bit}
    return _reply(msg, wire, spec, cfg, algo, reply_metrics, extra, context, pid)


def handle_evaluate_statistics(
    msg: Message, context: Context, cfg: RunConfig, algo: Algorithm
) -> Message:
    """``algo``'s client evaluation of the received state on this node's test split (the
    caller has refused it under DP unless ``privacy.clear-evaluation``)."""
    if algo.evaluate_client is None:
        raise ClientInputError(f"algorithm {algo.name!r} does not evaluate on clients")
    data, pid = client_data(context, cfg)
    state = received_state(msg)
    if len(data.y_test) == 0:  # expected (half of MovieLens' users rate nothing in u1.test):
        # weight 0 and no metrics; as an error reply it was a warning per node and round
        return Message(RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: 0})}), reply_to=msg)
    server_round = int(message_config(msg).get(SERVER_ROUND, 0))
    ctx = RoundContext(cfg, server_round, pid, _local(context))
    metrics = algo.evaluate_client(state, data, ctx)
    count = 1 if cfg.privacy.dp in CLIENT_LEVEL_DP else len(data.y_test)
    return Message(
        RecordDict({METRICS: MetricRecord({NUM_EXAMPLES: count, **metrics})}), reply_to=msg
    )


def _round_clip(msg: Message, cfg: RunConfig) -> float:
    """The norm this client clips to: ``privacy.clip-norm``, or under adaptive clipping the
    round's norm from the server's message."""
    if not cfg.privacy.adaptive:
        return cfg.privacy.clip_norm
    clip = message_config(msg).get(CLIP_NORM)
    if not isinstance(clip, float | int) or not 0 < clip < float("inf"):
        raise ClientInputError(
            f"adaptive clipping: the message's {CLIP_NORM!r} must be a positive number, "
            f"got {clip!r}"
        )
    return float(clip)


def _local(context: Context) -> dict[str, np.ndarray]:
    """The node's local state (a copy), empty before its first training round."""
    saved = context.state.array_records.get(LOCAL_MODEL)
    return {} if saved is None else {k: to_numpy(v).copy() for k, v in saved.items()}


def on_wire(
    wire: np.ndarray, spec: Spec, cfg: RunConfig, algo: Algorithm
) -> tuple[np.ndarray, float]:
    """The wire vector as it travels and the bound of its entries: under secure aggregation
    in float64 with its counts in the encoding's units
    (:func:`privacy.secagg.encoding.to_encoding`: the mod masks it at the precision it was
    computed in), else in the algorithm's ``wire_dtype``."""
    if cfg.secagg.mode != "off":
        return to_encoding(wire, spec, cfg), wire_bound(spec, cfg)
    return wire.astype(algo.wire_dtype, copy=False), spec.bound


def received_state(msg: Message) -> dict[str, np.ndarray]:
    """The global state a message brings: its arrays, or the compressed model it carries
    (``compression.downlink``, :func:`fedcore.compressed.unpack_model`)."""
    records = msg.content.array_records
    if ARRAYS in records:
        return to_numpy_dict(records[ARRAYS])
    if COMPRESSED in records:
        from fedcore.compressed import unpack_model  # (only runs that compress load it)

        try:
            return unpack_model(to_numpy_dict(records[COMPRESSED]))
        except ValueError as err:
            raise ClientInputError(f"the compressed global model: {err}") from None
    raise ClientInputError(f"message has no ArrayRecord {ARRAYS!r} or {COMPRESSED!r}")


def _compressed(
    wire: np.ndarray, spec: Spec, cfg: RunConfig, context: Context, server_round: int, pid: int
) -> ArrayRecord:
    """The wire vector compressed (``compression.uplink``; after any DP noise, so it is
    post-processing), error feedback's residual kept in the node's state."""
    from fedcore.compressed import pack

    c = cfg.compression
    saved = context.state.array_records.get(RESIDUAL)
    residual = None if saved is None else to_numpy(saved["residual"]).astype(np.float64)
    rng = seeding.numpy_rng(cfg.seed, seeding.COMPRESSION, server_round, pid)
    arrays, residual = pack(wire, spec, c, rng, residual)
    if residual is not None:  # float32: a model's precision, half a float64's checkpoint
        context.state[RESIDUAL] = ArrayRecord({"residual": from_numpy(residual.astype(np.float32))})
    return ArrayRecord({k: from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _reply(
    msg: Message,
    wire: np.ndarray,
    spec: Spec,
    cfg: RunConfig,
    algo: Algorithm,
    metrics: dict,
    extra: dict,
    context: Context,
    pid: int,
) -> Message:
    """The reply holding the wire vector as it travels (:func:`on_wire`), or compressed."""
    if cfg.compression.uplink != "none" and cfg.secagg.mode == "off":  # (under secure
        # aggregation the mod's fixed-point encoding is the quantizer: privacy.secagg.encoding)
        server_round = int(message_config(msg).get(SERVER_ROUND, 0))
        content = RecordDict(
            {
                COMPRESSED: _compressed(wire, spec, cfg, context, server_round, pid),
                METRICS: MetricRecord(metrics),
                **extra,
            }
        )
        return Message(content, reply_to=msg)
    wire, bound = on_wire(wire, spec, cfg, algo)
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({STATISTICS: from_numpy(wire)}),
            METRICS: MetricRecord(metrics),
            WIRE: ConfigRecord({"bound": float(bound)}),
            **extra,
        }
    )
    return Message(content, reply_to=msg)
