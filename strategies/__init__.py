"""Server side: Flower strategies (subclasses of ``flwr.serverapp.strategy``)."""

from strategies.fedavg import FedAvg
from strategies.registry import NEEDS_INDIVIDUAL_UPDATES, build_strategy

__all__ = ["NEEDS_INDIVIDUAL_UPDATES", "FedAvg", "build_strategy"]
