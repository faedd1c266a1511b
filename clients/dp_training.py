"""Sample-level DP-SGD for the local training of a client (Abadi et al. 2016).

Each step samples every local example independently with probability ``q`` (Poisson
sampling, what the accountant assumes), clips each example's gradient to ``clip_norm``,
adds Gaussian noise of standard deviation ``noise_multiplier * clip_norm`` to the sum and
divides by the expected batch size ``q * n``. The per-example clipping runs in one backward
pass (:mod:`privacy.clipping`) for linear models, through Opacus' per-sample gradients for
others.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.keys import TRAIN_LOSS, TRAIN_SECONDS
from fedcore.tasks.base import ClientData, ClientUpdate, TrainParams
from privacy.clipping import clipped_gradients


@dataclass(frozen=True)
class DpSgdParams:
    """The mechanism's parameters for one client and round.

    Attributes:
        noise_multiplier: noise std / clip norm of each released step (what is accounted).
        clip_norm: per-example clip norm.
        sample_rate: Poisson sampling probability of each example in a step.
        one_step: distributed DP-SGD: a round is a single step, whatever the epochs.
        noise_share: the fraction of the step's noise std this client adds: 1, or for
            distributed DP-SGD ``1 / sqrt(k)`` so that the sum over k clients carries it all.
    """

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    one_step: bool = False
    noise_share: float = 1.0

    def steps(self, epochs: int) -> int:
        """Steps of a round of ``epochs`` passes in expectation: ``epochs / q`` (or one)."""
        return 1 if self.one_step else max(1, math.ceil(epochs / self.sample_rate))

    @property
    def noise_std(self) -> float:
        """The std of the Gaussian noise this client adds to each step's clipped sum."""
        return self.noise_multiplier * self.clip_norm * self.noise_share


def train_one_client_dp(
    model: nn.Module,
    data: ClientData,
    params: TrainParams,
    dp: DpSgdParams,
    rng: torch.Generator,
    noise_rng: torch.Generator | None = None,
) -> ClientUpdate:
    """DP-SGD on the client's data for ``dp.steps(params.epochs)`` steps, from ``model``.

    ``rng`` draws the Poisson batches, ``noise_rng`` (default: ``rng``) the Gaussian noise;
    the ClientApp passes a noise generator the server cannot reproduce."""
    noise_rng = rng if noise_rng is None else noise_rng
    start = time.perf_counter()
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay
    )
    n = data.num_train
    expected_batch = dp.sample_rate * n
    std = dp.noise_std
    total_loss, steps = 0.0, dp.steps(params.epochs)
    with clipped_gradients(model) as clipper:
        for _ in range(steps):
            idx = (torch.rand(n, generator=rng) < dp.sample_rate).nonzero().squeeze(1)
            optimizer.zero_grad(set_to_none=True)
            if len(idx) > 0:
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx], reduction="sum")
                loss.backward()
                clipper.write_clipped_sum(dp.clip_norm)
                total_loss += loss.item() / len(idx)
            for p in model.parameters():
                if p.grad is None:  # an empty Poisson batch still releases pure noise
                    p.grad = torch.zeros_like(p)
                p.grad.add_(torch.randn(p.shape, generator=noise_rng), alpha=std)
                p.grad.div_(expected_batch)
            optimizer.step()
    metrics = {TRAIN_LOSS: total_loss / steps, TRAIN_SECONDS: time.perf_counter() - start}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ClientUpdate(state=state, num_examples=n, metrics=metrics)
