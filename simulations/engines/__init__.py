"""Execution engines: each runs a config and returns the final global model."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord

from fedcore.config import RunConfig
from fedcore.server import RoundRecord


def run_engine(cfg: RunConfig, on_round: Callable[[RoundRecord], None]) -> ArrayRecord:
    """Run ``cfg`` on the engine it names."""
    if cfg.engine.name == "ray":
        from simulations.engines.ray_engine import run_ray

        return run_ray(cfg, on_round)
    from simulations.engines.inprocess import run_inprocess

    return run_inprocess(cfg, on_round)
