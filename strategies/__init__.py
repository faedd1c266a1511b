"""Server side: Flower strategies (subclasses of ``flwr.serverapp.strategy``)."""

from fedcore.config import NEEDS_INDIVIDUAL_UPDATES
from strategies.fedavg import FedAvg
from strategies.registry import build_strategy

__all__ = ["NEEDS_INDIVIDUAL_UPDATES", "FedAvg", "build_strategy"]
