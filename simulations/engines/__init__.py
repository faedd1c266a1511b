"""Execution engines: each runs a config and returns the final global model."""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import ArrayRecord

from fedcore.checkpoint import Checkpoint
from fedcore.config import RunConfig
from fedcore.server import RoundRecord, ServerState

# A round's server state and a function that snapshots the nodes' states (serialized
# ``Context.state`` by node id; None where the engine does not hold the nodes), for a
# checkpoint writer to call only when it writes.
NodeStates = Callable[[], dict[int, bytes] | None]
OnState = Callable[[ServerState, NodeStates], None]
OnRelease = Callable[[int, list[dict]], None]  # (round, its DP events)


def run_engine(
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None],
    resume: Checkpoint | None = None,
    on_state: OnState | None = None,
    on_release: OnRelease | None = None,
) -> ArrayRecord:
    """Run ``cfg`` on the engine it names (``resume``: continue from that checkpoint;
    ``on_release``: a round's DP events as soon as they exist, as
    :func:`fedcore.server.run_server` says)."""
    if cfg.engine.name == "ray":
        # Ray's failure signal handler turns SIGTERM into a stack dump and an abort (exit
        # 134); fedcore handles SIGTERM itself (interrupted, resumable, 143). Ray reads this
        # when first imported, which in a fedcore process is the line after.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        from simulations.engines.ray_engine import run_ray

        return run_ray(cfg, on_round, resume, on_state, on_release)
    from simulations.engines.inprocess import run_inprocess

    return run_inprocess(cfg, on_round, resume, on_state, on_release)
