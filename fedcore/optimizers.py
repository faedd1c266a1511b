"""Server optimizers on a cohort's mean update, as pure functions of arrays.

FedAvg and FedProx add the mean update; FedAvgM (Hsu et al. 2019) steps with server momentum;
FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021) step adaptively. Each is written step for
step as Flower's strategy of the same name computes it (``flwr.serverapp.strategy``; one
difference: FedAdam's bias correction counts the optimizer's steps where Flower reads the
round number, so the two part after a round that aggregated nothing), so an
algorithm on typed statistics offers what Flower's strategies offer for model updates (a test
runs both and compares the models). Here the optimizer reads the mean of the (possibly
noised) sums, so under client-level DP its state is post-processing of the releases.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcore.config.schema import StrategyConfig

Arrays = Mapping[str, np.ndarray]

OPTIMIZERS = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
FIRST_MOMENT, SECOND_MOMENT = "m", "v"


def buffers(s: StrategyConfig) -> tuple[str, ...]:
    """The buffers, one per weight array, that strategy ``s.name`` keeps between rounds."""
    if s.name in ("fedadam", "fedyogi", "fedadagrad"):
        return FIRST_MOMENT, SECOND_MOMENT
    if s.name == "fedavgm" and s.server_momentum > 0:
        return (FIRST_MOMENT,)
    if s.name not in OPTIMIZERS:
        raise ValueError(f"no server optimizer {s.name!r}; one of {OPTIMIZERS}")
    return ()


def server_step(
    s: StrategyConfig,
    server_round: int,
    weights: Arrays,
    update: Arrays,
    state: Mapping[str, Arrays],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """The new weights and buffers after one round whose mean update is ``update``.

    Args:
        s: the strategy section (``name`` and its hyperparameters).
        server_round: the round, from 1 (FedAdam's bias correction reads it).
        weights: the global weights before the round.
        update: name -> the cohort's mean of ``local - global`` (Flower's ``delta_t``).
        state: buffer name (`buffers`) -> name -> array; zeros before the first round.
    """
    new_state = {b: dict(state[b]) for b in buffers(s)}
    if s.name in ("fedavg", "fedprox"):
        return {k: w + update[k] for k, w in weights.items()}, new_state
    if s.name == "fedavgm":  # the pseudo-gradient is -update; its momentum, then a step
        step = {k: -update[k] for k in weights}
        if s.server_momentum > 0:
            m = new_state[FIRST_MOMENT]
            for k in weights:
                m[k] = s.server_momentum * m[k] + step[k]  # from zeros: Flower's first m
            step = m
        return {k: w - s.server_lr * step[k] for k, w in weights.items()}, new_state
    m, v = new_state[FIRST_MOMENT], new_state[SECOND_MOMENT]
    beta_1 = 0.0 if s.name == "fedadagrad" else s.beta_1  # Flower's FedAdagrad: no momentum
    eta = s.eta
    for k in weights:
        d = update[k]
        m[k] = beta_1 * m[k] + (1 - beta_1) * d
        if s.name == "fedadam":
            v[k] = s.beta_2 * v[k] + (1 - s.beta_2) * d**2
        elif s.name == "fedyogi":
            v[k] = v[k] - (1 - s.beta_2) * d**2 * np.sign(v[k] - d**2)
        else:
            v[k] = v[k] + d**2
    if s.name == "fedadam":  # Kingma and Ba's bias-corrected rate, at Flower's round offset
        eta = s.eta * np.sqrt(1 - s.beta_2 ** (server_round + 1.0))
        eta /= 1 - s.beta_1 ** (server_round + 1.0)
    new = {k: w + eta * m[k] / (np.sqrt(v[k]) + s.tau) for k, w in weights.items()}
    return new, new_state
