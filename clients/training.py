"""Local training and evaluation for supervised classifiers: the client hooks of the MLP task.

``train_one_client`` is the one function that the Flower ClientApp, the in-process engine, the
benchmarks' bare loop and the tests all call, so what is measured is what runs.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.keys import ACCURACY, LOSS, TRAIN_LOSS, TRAIN_SECONDS
from fedcore.tasks.base import ClientData, ClientUpdate, TrainParams


def train_one_client(
    model: nn.Module, data: ClientData, params: TrainParams, rng: torch.Generator
) -> ClientUpdate:
    """Run ``params.epochs`` of mini-batch SGD on the client's data, starting from ``model``.

    With ``params.proximal_mu > 0`` the loss gets FedProx's term ``mu/2 ||w - w_global||^2``
    (Li et al. 2020), where ``w_global`` are the weights the model held on entry.
    """
    start = time.perf_counter()
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=params.lr,
        momentum=params.momentum,
        weight_decay=params.weight_decay,
    )
    global_params = (
        [p.detach().clone() for p in model.parameters()] if params.proximal_mu > 0 else None
    )
    n = data.num_train
    total_loss, steps = 0.0, 0
    for _ in range(params.epochs):
        order = torch.randperm(n, generator=rng)
        for begin in range(0, n, params.batch_size):
            idx = order[begin : begin + params.batch_size]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            if global_params is not None:
                prox = sum(
                    (p - g).pow(2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + 0.5 * params.proximal_mu * prox
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            steps += 1
    metrics = {TRAIN_LOSS: total_loss / max(steps, 1), TRAIN_SECONDS: time.perf_counter() - start}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ClientUpdate(state=state, num_examples=n, metrics=metrics)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``."""
    if len(y) == 0:
        return {LOSS: 0.0, ACCURACY: 0.0}
    model.eval()
    logits = model(x)
    return {
        LOSS: F.cross_entropy(logits, y).item(),
        ACCURACY: (logits.argmax(dim=1) == y).float().mean().item(),
    }
