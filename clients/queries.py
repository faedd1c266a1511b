"""The ClientApp's query handler: a task's setup (:mod:`fedcore.tasks.setup`) on this node.

Two queries name the task's setup (``query`` in the config record):

- at the secure-sum ``input`` stage, the node computes its vector from its own partition
  (:attr:`Setup.share`) and replies with it for the secure-aggregation mod to mask. The mod
  marks the node's state before it calls this handler; a query that did not pass through
  the mod (a ClientApp built without it, or a server asking outright) is refused, so the
  vector never leaves unmasked. A node answers once per run: the release's DP noise is
  accounted once, and sums of fresh noise asked again would average it away;
- with a ``release`` id and the release's arrays, the node keeps what it needs of them
  (:attr:`Setup.keep`) in its ``Context.state``; training reads it from there.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from clients.handlers import ClientInputError, message_config, raw_partition
from clients.policy import node_policy
from fedcore.arrays import from_numpy, to_numpy_dict
from fedcore.config import RunConfig
from fedcore.keys import (
    ARRAYS,
    METRICS,
    QUERY,
    RELEASE,
    SECAGG_MASKING,
    SECAGG_STAGE,
    SERVER_ROUND,
    SETUP_ANSWERED,
    SETUP_ID,
    SETUP_KEPT,
    STATISTICS,
    WIRE,
)
from fedcore.tasks import get_task


def handle_query(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Answer the server's query about this task's setup."""
    node_policy(context).enforce(cfg)
    setup = get_task(cfg.task).setup
    config = message_config(msg)
    name = config.get(QUERY)
    if setup is None or not setup.needed(cfg) or name != setup.name:
        raise ClientInputError(
            f"task {cfg.task!r} answers no query {name!r}"
            + (f" (its setup is {setup.name!r})" if setup is not None else "")
        )
    part, pid = raw_partition(context, cfg)
    if RELEASE in config:
        return _keep(msg, context, cfg, part, str(config[RELEASE]))
    marked = context.state.config_records.get(SECAGG_MASKING)
    round_id = config.get(SERVER_ROUND)
    if config.get(SECAGG_STAGE) != "input" or marked is None or marked["round"] != round_id:
        raise ClientInputError(
            f"query {name!r} asks for this node's vector outside a secure sum; it is only "
            "sent masked"
        )
    if SETUP_ANSWERED in context.state:  # a second noised sum would average the noise away
        raise ClientInputError(
            f"this node already sent its vector for {name!r} in this run; the release's "
            "noise is accounted once, so it answers once"
        )
    context.state[SETUP_ANSWERED] = ConfigRecord({"round": round_id})
    shape = setup.shape(cfg)
    vector = np.asarray(setup.share(cfg, part, pid), np.float64).ravel()
    if vector.size != shape.length:
        raise ClientInputError(
            f"{setup.name!r} computed {vector.size} entries, its shape says {shape.length}"
        )
    content = RecordDict(
        {
            ARRAYS: ArrayRecord({STATISTICS: from_numpy(vector)}),
            METRICS: MetricRecord(),
            WIRE: ConfigRecord({"bound": float(shape.bound), "frac-bits": shape.frac_bits}),
        }
    )
    return Message(content, reply_to=msg)


def _keep(msg: Message, context: Context, cfg: RunConfig, part, release_id: str) -> Message:
    """Keep what this node needs of the broadcast release, and acknowledge it."""
    setup = get_task(cfg.task).setup
    arrays = msg.content.array_records.get(ARRAYS)
    if arrays is None:
        raise ClientInputError(f"the release of {setup.name!r} carries no arrays")
    try:
        kept = setup.keep(cfg, part, to_numpy_dict(arrays))
    except (KeyError, ValueError) as err:
        raise ClientInputError(f"the release of {setup.name!r} is unusable: {err}") from None
    context.state[SETUP_KEPT] = ArrayRecord(
        {k: from_numpy(np.ascontiguousarray(v)) for k, v in kept.items()}
    )
    context.state[SETUP_ID] = ConfigRecord({"id": release_id})
    metrics = MetricRecord({"kept-entries": _size(kept)})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)


def _size(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).size for a in arrays.values()))
