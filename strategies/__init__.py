"""Server side: the Flower strategy of a run (a ``flwr.serverapp.strategy.Strategy`` composed
around an algorithm on typed statistics) and its cohort sampler."""

from fedcore.config import NEEDS_INDIVIDUAL_UPDATES
from strategies.cohort import Cohort
from strategies.registry import build_strategy

__all__ = ["NEEDS_INDIVIDUAL_UPDATES", "Cohort", "build_strategy"]
