"""Strategies by name. Each subclasses Flower's and adds fedcore's FedAvg hooks underneath."""

from __future__ import annotations

from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.strategy import Strategy

from fedcore.config import RunConfig
from fedcore.tasks import Algorithm, checked_task
from strategies.fedavg import FedAvg


class FedProx(flwr_strategy.FedProx, FedAvg):
    """FedProx (Li et al. 2020): FedAvg plus a proximal term that clients add to their loss."""


class FedAvgM(flwr_strategy.FedAvgM, FedAvg):
    """FedAvg with server momentum (Hsu et al. 2019)."""


class FedAdam(flwr_strategy.FedAdam, FedAvg):
    """Adaptive server optimiser (Reddi et al. 2021)."""


class FedYogi(flwr_strategy.FedYogi, FedAvg):
    """Adaptive server optimiser (Reddi et al. 2021)."""


class FedAdagrad(flwr_strategy.FedAdagrad, FedAvg):
    """Adaptive server optimiser (Reddi et al. 2021)."""


class FedMedian(flwr_strategy.FedMedian, FedAvg):
    """Coordinate-wise median (Yin et al. 2018); needs every update, so it does not stream."""


class FedTrimmedAvg(flwr_strategy.FedTrimmedAvg, FedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018)."""


class Krum(flwr_strategy.Krum, FedAvg):
    """Krum (Blanchard et al. 2017): the update closest to its neighbours."""


def build_strategy(cfg: RunConfig) -> FedAvg | Strategy:
    """The strategy named by ``cfg.strategy.name``; cohort sizes from ``train``/``evaluate``;
    wrapped in Flower's DP strategy for client-level DP (``privacy.dp = "client"``). An
    algorithm on typed statistics gets :class:`~strategies.statistics.StatisticsStrategy`
    around a FedAvg cohort instead."""
    s = cfg.strategy
    common = dict(
        fraction_train=cfg.train.fraction,
        fraction_evaluate=cfg.evaluate.fraction,
        min_train_nodes=cfg.train.min_clients,
        min_evaluate_nodes=1 if cfg.evaluate.fraction > 0 else 0,
        min_available_nodes=cfg.data.num_clients,
    )
    adaptive = dict(eta=s.eta, eta_l=cfg.train.lr, beta_1=s.beta_1, beta_2=s.beta_2, tau=s.tau)
    builders = {
        "fedavg": lambda: FedAvg(**common),
        "fedprox": lambda: FedProx(**common, proximal_mu=s.proximal_mu),
        "fedavgm": lambda: FedAvgM(
            **common, server_learning_rate=s.server_lr, server_momentum=s.server_momentum
        ),
        "fedadam": lambda: FedAdam(**common, **adaptive),
        "fedyogi": lambda: FedYogi(**common, **adaptive),
        "fedadagrad": lambda: FedAdagrad(**common, eta=s.eta, eta_l=cfg.train.lr, tau=s.tau),
        "fedmedian": lambda: FedMedian(**common),
        "fedtrimmedavg": lambda: FedTrimmedAvg(**common, beta=s.trim_beta),
        "krum": lambda: Krum(**common, num_malicious_nodes=s.num_malicious),
    }
    task = checked_task(cfg)  # the task's own configuration rules first
    if isinstance(task, Algorithm):  # typed statistics: the algorithm's own server hook
        from strategies.statistics import StatisticsStrategy

        cohort = FedAvg(**common)
        _sampling(cohort, cfg)
        return StatisticsStrategy(task, cfg, cohort)
    strategy = builders[s.name]()
    _sampling(strategy, cfg)
    if cfg.privacy.dp in ("client", "distributed"):
        from strategies.dp import wrap_with_dp

        return wrap_with_dp(cfg, strategy)
    return strategy


def _sampling(strategy: FedAvg, cfg: RunConfig) -> None:
    """How ``strategy`` samples its cohorts: seeded, or from the OS CSPRNG under DP."""
    strategy.seed = cfg.seed
    strategy.secret_sampling = cfg.privacy.dp != "off" and not cfg.privacy.seeded_noise
    strategy.sampling = cfg.train.sampling
