"""The server strategy of a run: an algorithm's rounds around a cohort sampler."""

from __future__ import annotations

from fedcore.config import RunConfig
from fedcore.tasks import checked_task
from strategies.statistics import StatisticsStrategy


def build_strategy(cfg: RunConfig) -> StatisticsStrategy:
    """The run's Flower strategy: :class:`~strategies.statistics.StatisticsStrategy` around
    the task's algorithm (FedAvg and the server optimizers for a model task; the name in
    ``cfg.strategy.name`` is the algorithm's to implement), its cohorts sampled as ``cfg``
    says (:meth:`strategies.cohort.Cohort.of`: seeded, or from the OS CSPRNG under DP)."""
    return StatisticsStrategy(checked_task(cfg), cfg)
