"""The ``ray`` engine: Flower's own simulation runtime (``run_simulation``, Ray backend).

This is the path that scales to a Ray cluster. It runs the same ServerApp round loop and the
same ClientApp handlers as the in-process engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord
from flwr.simulation import run_simulation

from fedcore.apps import make_server_app
from fedcore.checkpoint import Checkpoint
from fedcore.config import RunConfig
from fedcore.server import RoundRecord, ServerState
from simulations.engines.ray_reasons import one_line_failures, plain_failures
from simulations.faults import simulation_client_app

if TYPE_CHECKING:
    from simulations.engines import OnState


def run_ray(
    cfg: RunConfig,
    on_round: Callable[[RoundRecord], None],
    resume: Checkpoint | None = None,
    on_state: OnState | None = None,
) -> ArrayRecord:
    """Run ``cfg`` on Flower's Ray simulation engine and return the final global model.

    The nodes' contexts live inside Flower's runtime, out of fedcore's reach: its checkpoints
    hold no node states (``resume`` refuses a run whose nodes keep any,
    :func:`simulations.rundir.node_state_needed`)."""
    result: list[ArrayRecord] = []
    hook = None if on_state is None else (lambda s: on_state(s, lambda: None))
    with one_line_failures():  # Flower's Ray backend logs each failure as ~90 lines
        run_simulation(
            server_app=make_server_app(
                cfg,
                on_round=lambda record: on_round(plain_failures(record)),
                on_done=result.append,
                start=ServerState.of(resume),
                on_state=hook,
            ),
            client_app=simulation_client_app(cfg),
            num_supernodes=cfg.data.num_clients,
            backend_config={
                "client_resources": {"num_cpus": cfg.engine.threads, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": cfg.engine.workers * cfg.engine.threads,
                    "include_dashboard": False,
                },
            },
        )
    if not result:
        raise RuntimeError("the Ray simulation ended without a final model (see its log)")
    return result[0]
