"""The ``mlp`` task: a fully connected ReLU network on flattened images.

With ``model.hidden = [200, 200]`` this is McMahan et al.'s (2017) "2NN".
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from clients.dp_training import train_one_client_dp
from clients.training import evaluate, train_one_client
from fedcore.config import RunConfig
from fedcore.tasks.base import ModelShape, Task
from fedcore.tasks.classification import check_config, load_federated, load_server_data
from fedcore.tasks.options import SECTIONS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(
    num_features: int,
    hidden: tuple[int, ...],
    num_classes: int,
    generator: torch.Generator,
    activation: str = "relu",
) -> nn.Sequential:
    """``Linear -> activation`` blocks then a linear classifier, from ``generator``.

    Same scheme as ``nn.Linear``'s default (uniform with bound 1/sqrt(fan_in)) but drawn from
    an explicit generator instead of torch's global RNG.
    """
    widths = (num_features, *hidden, num_classes)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layer = nn.Linear(fan_in, fan_out)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        layers.append(layer)
        if i < len(hidden):
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def _build(cfg: RunConfig, data: ModelShape, generator: torch.Generator) -> nn.Module:
    return mlp(
        data.num_features, cfg.model.hidden, data.num_classes, generator, cfg.model.activation
    )


TASK = Task(
    name="mlp",
    load_data=lambda cfg: load_federated(cfg.data, cfg.seed),
    build_model=_build,
    train_one_client=train_one_client,
    evaluate=evaluate,
    train_one_client_dp=train_one_client_dp,
    check_config=check_config,
    node_files=True,
    load_server=load_server_data,
    sections=SECTIONS["mlp"],
)
