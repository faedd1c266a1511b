"""The ``ray`` engine: Flower's own simulation runtime (``run_simulation``, Ray backend).

This is the path that scales to a Ray cluster. It runs the same ServerApp round loop and the
same ClientApp handlers as the in-process engine.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord
from flwr.simulation import run_simulation

from fedcore.apps import make_server_app
from fedcore.config import RunConfig
from fedcore.server import RoundRecord
from simulations.faults import simulation_client_app


def run_ray(cfg: RunConfig, on_round: Callable[[RoundRecord], None]) -> ArrayRecord:
    """Run ``cfg`` on Flower's Ray simulation engine and return the final global model."""
    result: list[ArrayRecord] = []
    run_simulation(
        server_app=make_server_app(cfg, on_round=on_round, on_done=result.append),
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
